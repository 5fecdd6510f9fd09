"""The MLflow UI in a real browser, over the store a small real search wrote.

A smoke search (``search/tune.py``, two trials) writes a SQLite MLflow store; ``mlflow
server`` serves it on 127.0.0.1; Debian's Chromium, driven by Playwright, checks what a
researcher is shown: the experiment, the runs table with our run names, two trials selected
and compared, our param, metric and tag names on the compare page, and the parallel
coordinates chart with our axes. Each step saves a screenshot under
``$HMLC_TEST_ARTIFACTS/browser`` (default ``test-artifacts/browser`` in the repository).
Every page request must stay on 127.0.0.1.

Facts about MLflow 3.17's UI that the steps rely on: ``#/experiments/<id>`` redirects to
a GenAI overview, so the runs table is opened at ``#/experiments/<id>/runs``; the UI
never reaches network idle, so every step waits for visible text; child runs are
folded under their parent until its expander is clicked; charts draw lines on a canvas
but their axis labels are SVG text.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
TUNE = REPO_ROOT / "search" / "tune.py"
CHROMIUM = Path("/usr/bin/chromium")
EXPERIMENT = "browser-check"
METHOD = "hmce"
# Chromium flags for a headless run without a sandbox, GPU or outside traffic. The
# resolver rule makes every host name but 127.0.0.1 unresolvable, because Chromium
# still looks up outside hosts with the other flags alone.
CHROMIUM_FLAGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
)
LOCAL_SCHEMES = ("data", "blob", "about", "chrome-error")
STEP_TIMEOUT_MS = 60_000
SERVER_START_TIMEOUT_S = 180.0
SEARCH_TIMEOUT_S = 900

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _require_browser() -> None:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not found; install Debian's chromium package (`apt-get install chromium`)")
    pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed (`pip install playwright`)")


def screenshot_dir() -> Path:
    """Return (and create) the folder for this test's screenshots."""
    base = os.environ.get("HMLC_TEST_ARTIFACTS")
    folder = Path(base) / "browser" if base else REPO_ROOT / "test-artifacts" / "browser"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def search_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run a smoke search of two trials and return the folder holding its ``mlflow.db``."""
    _require_browser()
    folder = tmp_path_factory.mktemp("browser-search")
    command = [
        sys.executable, str(TUNE),
        "--method", METHOD,
        "--dataset", "fashion-mnist",
        "--budget", "smoke",
        "--num-samples", "2",
        "--num-cpus", "2",
        "--tracking-uri", f"sqlite:///{folder}/mlflow.db",
        "--experiment-name", EXPERIMENT,
        "--storage-path", str(folder / "ray_results"),
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=SEARCH_TIMEOUT_S)
    if done.returncode != 0:
        pytest.fail(f"the smoke search failed with exit status {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return folder


@pytest.fixture(scope="module")
def store_facts(search_store: Path) -> dict[str, Any]:
    """Read from the store what the UI must show: ids, run names, param and metric keys."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{search_store}/mlflow.db")
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert experiment is not None, f"the search wrote no experiment {EXPERIMENT!r}"
    experiment_id = experiment.experiment_id
    parents = client.search_runs([experiment_id], filter_string="tags.run_kind = 'search'")
    trials = client.search_runs([experiment_id], filter_string="tags.run_kind = 'trial'", order_by=["attributes.run_name ASC"])
    assert len(parents) == 1
    assert len(trials) >= 2, "the browser check compares two trials"
    compared = trials[:2]
    return {
        "experiment_id": experiment_id,
        "parent_name": parents[0].info.run_name,
        "trial_names": [run.info.run_name for run in compared],
        "params": sorted(set(compared[0].data.params) & set(compared[1].data.params)),
        "metrics": sorted(set(compared[0].data.metrics) & set(compared[1].data.metrics)),
    }


@pytest.fixture(scope="module")
def mlflow_server(search_store: Path) -> Iterator[str]:
    """Serve the search's store with ``mlflow server`` on 127.0.0.1; yield its base URL."""
    port = free_port()
    command = [
        sys.executable, "-m", "mlflow", "server",
        "--host", "127.0.0.1",
        "--port", str(port),
        "--backend-store-uri", f"sqlite:///{search_store}/mlflow.db",
        "--default-artifact-root", str(search_store / "mlruns"),
        "--workers", "1",
    ]
    # Job execution would start extra job workers (about 2 GB) that this check does not use.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    log = open(search_store / "mlflow-server.log", "w")
    server = subprocess.Popen(command, cwd=search_store, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_for_health(base, server, search_store / "mlflow-server.log")
        yield base
    finally:
        # The server runs uvicorn in a child process: stop the whole session we started.
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)
        log.close()


def _wait_for_health(base: str, server: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"mlflow server exited with status {server.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(1.0)
    pytest.fail(f"mlflow server at {base} did not answer /health within {SERVER_START_TIMEOUT_S:.0f} s:\n{log_path.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def browser_page(mlflow_server: str) -> Iterator[tuple[Any, list[str]]]:
    """Yield a Chromium page and the list that records every URL it requests."""
    from playwright.sync_api import sync_playwright

    requested: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=list(CHROMIUM_FLAGS), headless=True)
        context = browser.new_context(viewport={"width": 1600, "height": 1000})
        context.on("request", lambda request: requested.append(request.url))
        page = context.new_page()
        page.set_default_timeout(STEP_TIMEOUT_MS)
        try:
            yield page, requested
        finally:
            context.close()
            browser.close()


def outside_requests(urls: list[str]) -> list[str]:
    """Return the URLs that leave 127.0.0.1 (browser-internal schemes are allowed)."""
    outside = []
    for url in urls:
        parsed = urlparse(url)
        if parsed.scheme in LOCAL_SCHEMES:
            continue
        if parsed.hostname != "127.0.0.1":
            outside.append(url)
    return outside


def close_assistant_panel(page: Any) -> None:
    """Close MLflow 3.17's assistant side panel, which covers part of the runs table."""
    close = page.get_by_role("button", name="Close", exact=True)
    if close.count() and close.first.is_visible():
        close.first.click()


def run_row(page: Any, run_name: str) -> Any:
    return page.locator(".ag-row", has_text=run_name).first


def test_outside_request_filter() -> None:
    urls = ["http://127.0.0.1:5000/", "data:image/png;base64,AA", "https://fonts.example.com/a.css", "http://localhost:5000/"]
    assert outside_requests(urls) == ["https://fonts.example.com/a.css", "http://localhost:5000/"]


def test_compare_view_shows_search(
    mlflow_server: str, browser_page: tuple[Any, list[str]], store_facts: dict[str, Any]
) -> None:
    page, requested = browser_page
    shots = screenshot_dir()
    base = mlflow_server
    experiment_id = store_facts["experiment_id"]
    first, second = store_facts["trial_names"]

    # 1. The experiment list shows the search's experiment.
    page.goto(f"{base}/#/experiments")
    page.get_by_text(EXPERIMENT, exact=True).first.wait_for(state="visible")
    page.screenshot(path=str(shots / "01-experiment-list.png"))

    # 2. The runs table shows the search's parent run.
    page.goto(f"{base}/#/experiments/{experiment_id}/runs")
    page.get_by_text(store_facts["parent_name"]).first.wait_for(state="visible")
    close_assistant_panel(page)
    page.screenshot(path=str(shots / "02-runs-table.png"))

    # 3. Unfolding the parent shows the trials; select two of them.
    run_row(page, store_facts["parent_name"]).locator("button").first.click()
    for name in (first, second):
        page.get_by_text(name, exact=True).first.wait_for(state="visible")
        run_row(page, name).locator("input[type=checkbox]").first.check()
    compare_button = page.get_by_role("button", name="Compare", exact=True)
    compare_button.wait_for(state="visible")
    page.screenshot(path=str(shots / "03-two-trials-selected.png"))

    # 4. The compare page lists both runs, our params, metrics and tags.
    compare_button.click()
    page.get_by_text("Comparing 2 Runs").first.wait_for(state="visible")
    assert "compare-runs" in page.url
    for name in (first, second):
        page.get_by_text(name, exact=True).first.wait_for(state="visible")
    page.screenshot(path=str(shots / "04-compare-page.png"))
    tables = page.locator("table")
    for key in store_facts["params"]:
        tables.get_by_text(key, exact=True).first.wait_for(state="attached")
    for key in ("val/probe_acc", "val/probe_acc_best", "val/knn_acc", "train/loss"):
        assert key in store_facts["metrics"], f"the trials did not log {key}"
    # The metrics table is a virtualised list of 300 px sorted by name. Only its first rows
    # (eval/, test/, train/) exist in the page, so step 5 checks the val/ keys.
    metric_names = page.locator("div.ReactVirtualized__Grid").first
    metric_names.get_by_text("train/loss", exact=True).first.wait_for(state="attached")
    for tag in ("method", "status", "ray_trial_id", "sweep_id"):
        tables.get_by_text(tag, exact=True).first.wait_for(state="attached")
    tables.get_by_text(METHOD, exact=True).first.wait_for(state="attached")
    tables.get_by_text("completed", exact=True).first.wait_for(state="attached")
    page.get_by_text("Parameters", exact=True).last.evaluate("element => element.scrollIntoView({block: 'start'})")
    page.screenshot(path=str(shots / "05-compare-params-metrics.png"))

    # 5. Add the objective to the parallel coordinates chart through its Metrics selector.
    # The lines are drawn on a canvas, so the check reads the axis labels, which are SVG text.
    page.get_by_text("Parallel Coordinates Plot", exact=True).first.scroll_into_view_if_needed()
    metric_selector = page.get_by_role("combobox").nth(1)
    metric_selector.click()
    page.keyboard.type("val/probe_acc_best")
    page.keyboard.press("Enter")
    page.keyboard.press("Escape")
    page.locator("svg text", has_text="val/probe_acc_best").first.wait_for(state="attached")
    axis_labels = set(page.locator("svg text").all_text_contents())
    page.screenshot(path=str(shots / "06-parallel-coordinates.png"))
    assert "val/probe_acc_best" in axis_labels
    assert axis_labels & set(store_facts["params"]), f"no param axis among {sorted(axis_labels)}"

    outside = outside_requests(requested)
    assert not outside, f"the UI requested hosts other than 127.0.0.1: {outside[:10]}"
    assert any(url.startswith(base) for url in requested)
