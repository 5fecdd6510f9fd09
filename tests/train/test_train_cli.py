"""The single-run entry point ``python search/train.py``."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from search.train import build_parser, build_run, main  # noqa: E402

FASHION_DIR = "/usr/share/datasets/fashion-mnist"


def test_config_file_then_set_then_flags(tmp_path: Path) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(
        "data: {name: fashion-mnist}\n"
        "batch_size: 64\n"
        "method: {method: hmce, temperature: 0.2, beta: 0.1}\n"
        "optim: {lr: 0.3}\n"
    )
    args = build_parser().parse_args(
        ["--method", "g_hmlc", "--config", str(config), "--set", "method.beta=0.5",
         "--set", "method.gmm.n_components=4", "--temperature", "0.3", "--num-workers", "2"]
    )
    run = build_run(args)
    assert run.data.name == "fashion-mnist"
    assert run.model.encoder.name == "small_cnn"
    assert run.method.method == "g_hmlc"
    assert run.method.temperature == 0.3
    assert run.method.beta == 0.5
    assert run.method.gmm.n_components == 4
    assert run.optim.lr == 0.3
    assert run.batch_size == 64
    assert run.scaling.num_workers == 2


def test_invalid_value_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["--method", "hmc", "--dataset", "fashion-mnist", "--batch-size", "33", "--num-workers", "2"])
    assert status == 2
    assert "batch_size=33 is not divisible by scaling.num_workers=2" in capsys.readouterr().err


def test_bad_set_syntax_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--method", "hmc", "--set", "method.beta"]) == 2
    assert "use KEY=VALUE" in capsys.readouterr().err


def test_existing_run_folder_needs_resume(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "taken").mkdir()
    argv = ["--method", "hmc", "--dataset", "fashion-mnist", "--storage-path", str(tmp_path)]
    assert main([*argv, "--name", "taken"]) == 2
    assert "already exists; pass --resume" in capsys.readouterr().err
    assert main([*argv, "--name", "missing", "--resume"]) == 2
    assert "run folder" in capsys.readouterr().err


def test_missing_dataset_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HMLC_DATA_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("HOME", str(tmp_path))
    status = main(["--method", "hmc", "--dataset", "cifar100", "--data-dir", str(tmp_path / "none"),
                   "--storage-path", str(tmp_path)])
    assert status == 2
    assert "dataset 'cifar100' could not be loaded" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.usefixtures("ray_local")
def test_cli_trains_and_prints(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = main(
        ["--method", "supcon", "--dataset", "fashion-mnist", "--data-dir", FASHION_DIR,
         "--epochs", "1", "--batch-size", "32", "--max-steps-per-epoch", "2",
         "--storage-path", str(tmp_path), "--name", "cli",
         "--set", "knn_val_size=100", "--set", "knn_bank_size=200",
         "--set", "probe_train_size=300", "--set", "probe_val_size=200",
         "--set", "probe={weight_decays: [0.0], max_iter: 20}"]
    )
    output = capsys.readouterr().out
    assert status == 0
    assert "epoch 1/1  train/loss " in output
    assert "val/probe_acc" in output
    assert "val linear probe top-1 per level (L1 = coarsest): L1 " in output
    assert f"checkpoint: {tmp_path / 'cli' / 'checkpoint_epoch_0001'}" in output
