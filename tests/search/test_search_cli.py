"""Bad command-line input fails before any trial starts, with a message naming value and fix."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from search.cli import SearchSetupError, build_parser, parse_options
from search.tune import main

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HMLC_DATA_DIR", str(tmp_path / "no-data"))
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--method", "simclr"], "unknown --method 'simclr'; choose one of ['supcon', 'hmc', 'hmce', 'g_hmlc', 'a_hmlc']"),
        (["--method", "hmc", "--dataset", "mnist"], "unknown --dataset 'mnist'; choose one of"),
        (["--method", "hmc", "--budget", "huge"], "unknown --budget 'huge'; choose one of ['smoke', 'local', 'full']"),
        (["--method", "hmc", "--epochs", "0"], "--epochs 0 is invalid; use an integer >= 1"),
        (["--method", "hmc", "--num-workers", "0"], "--num-workers 0 is invalid"),
        (["--method", "hmc", "--dataset", "folder"], "--dataset folder needs --data-dir"),
        (["--method", "hmc", "--space-file", "missing.yaml"], "--space-file 'missing.yaml' not found"),
    ],
)
def test_option_errors(workdir: Path, argv: list[str], message: str) -> None:
    with pytest.raises(SearchSetupError) as caught:
        parse_options(argv)
    assert message in str(caught.value)


def test_main_prints_error_and_exits_2(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--method", "simclr"]) == 2
    assert "error: unknown --method 'simclr'" in capsys.readouterr().err


def test_dataset_not_found(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--method", "hmc", "--dataset", "cifar100", "--data-dir", str(workdir / "empty"), "--budget", "smoke"])
    err = capsys.readouterr().err
    assert code == 2
    assert "dataset 'cifar100' is not usable: cifar100 files not found" in err
    assert str(workdir / "empty") in err
    assert "Pass --data-dir" in err
    assert not (workdir / "ray_results").exists()
    assert not (workdir / "mlflow.db").exists()


@pytest.mark.parametrize(
    ("method", "override", "message"),
    [
        ("a_hmlc", "heads=3", "invalid search space: knob 'heads' = 3 does not divide the encoder's channel width 32; use one of [1, 2, 4, 8, 16, 32]"),
        ("g_hmlc", "heads=2", "knob 'heads' is not searched by method 'g_hmlc'"),
        ("g_hmlc", "gmm_k=2", "knob 'gmm_k' must be an integer >= the number of levels (3)"),
        ("hmc", "temperature", "invalid search override 'temperature'"),
    ],
)
def test_space_errors_before_ray(
    workdir: Path, capsys: pytest.CaptureFixture[str], method: str, override: str, message: str
) -> None:
    argv = ["--method", method, "--dataset", "fashion-mnist", "--budget", "smoke", "--space", override]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not (workdir / "mlflow.db").exists()


def test_resume_without_search(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--method", "hmc", "--dataset", "fashion-mnist", "--budget", "smoke", "--resume"]) == 2
    assert "no search to resume under" in capsys.readouterr().err


def test_help_names_units_and_defaults() -> None:
    text = build_parser().format_help()
    for phrase in (
        "global batch per step, in images",
        "CPU cores reserved per worker (default: 1.0)",
        "(default: cifar100)",
        "sqlite:///<working dir>/mlflow.db",
        "< 5 min on 2 CPU cores",
        "s3://",
    ):
        assert phrase in " ".join(text.split()), phrase
    assert "debug-fail-trial" not in text


@pytest.mark.slow
def test_more_workers_than_cluster(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    command = [
        sys.executable, str(REPO_ROOT / "search" / "tune.py"),
        "--method", "hmc", "--dataset", "fashion-mnist", "--budget", "smoke",
        "--num-workers", "4", "--num-cpus", "2",
    ]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "--num-workers 4 x --cpus-per-worker 1 needs 4 CPUs but the Ray cluster has 2" in done.stderr
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.parametrize(
    ("storage", "parts", "joined"),
    [
        ("s3://bucket/runs", ("sweep", "train_runs"), "s3://bucket/runs/sweep/train_runs"),
        ("s3://bucket/runs/", ("sweep",), "s3://bucket/runs/sweep"),
        (
            "s3://bucket/runs?endpoint_override=127.0.0.1:9000&scheme=http",
            ("sweep", "train_runs"),
            "s3://bucket/runs/sweep/train_runs?endpoint_override=127.0.0.1:9000&scheme=http",
        ),
        ("/data/runs", ("sweep",), os.path.join("/data/runs", "sweep")),
    ],
)
def test_join_storage_keeps_uri_options_at_the_end(storage: str, parts: tuple[str, ...], joined: str) -> None:
    from search.cli import join_storage

    assert join_storage(storage, *parts) == joined
