"""Tests of `nin-layers train` and `nin-layers evaluate`, including a killed run."""

import json
import os
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest

from nin_layers.cli import main
from nin_layers.training import PAUSE_ENV, PAUSE_MARKER, resolve_precision

ARGS = [
    "--epochs", "3", "--batch-size", "16", "--learning-rate", "0.01",
    "--precision", "float32", "--seed", "0",
]  # fmt: skip


def quadrant_npz(path, train_count=64, test_count=24):
    """16x16 images; class c (0..3) has a bright 8x8 square in quadrant c."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, count in (("train", train_count), ("test", test_count)):
        y = np.arange(count) % 4
        x = rng.integers(0, 70, (count, 16, 16), dtype=np.uint8)
        for index, label in enumerate(y):
            row, col = divmod(int(label), 2)
            x[index, row * 8 : row * 8 + 8, col * 8 : col * 8 + 8] += 180
        arrays[f"x_{split}"], arrays[f"y_{split}"] = x, y
    np.savez(path, **arrays)
    return str(path)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """`nin-layers train` run in-process with the default --out (runs/q-reshape)."""
    folder = tmp_path_factory.mktemp("cli")
    npz = quadrant_npz(folder / "q.npz")
    previous = os.getcwd()
    os.chdir(folder)
    try:
        code = main(["train", "--dataset", npz, *ARGS])
    finally:
        os.chdir(previous)
    return {"code": code, "npz": npz, "out": folder / "runs" / "q-reshape"}


def test_train_command_saves_everything_in_the_default_folder(finished_run, capsys):
    assert finished_run["code"] == 0
    out = finished_run["out"]
    names = ["model.keras", "history.csv", "history.json", "metrics.json", "config.json"]
    names += ["training_curves.png", "confusion_matrix.png", "class_activation_maps.png"]
    for name in names:
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs"] == 3 and metrics["precision"] == "float32"
    assert metrics["test_accuracy"] >= 0.9


def test_train_command_prints_one_summary_line(tmp_path, capsys):
    npz = quadrant_npz(tmp_path / "small.npz", 32, 8)
    code = main(["train", "--dataset", npz, "--epochs", "1", "--limit", "16",
                 "--out", str(tmp_path / "o"), "--batch-size", "8"])  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    summary = [line for line in out.splitlines() if line.startswith("test accuracy")]
    assert len(summary) == 1
    assert "test loss" in summary[0] and "wall time" in summary[0]
    auto = resolve_precision("auto")  # float32 without bfloat16 hardware or a GPU
    assert "images/s" in summary[0] and f"precision {auto}" in summary[0]
    assert "Data: small: 16 training and 8 test images" in out
    assert f"Precision: {auto} (auto: " in out
    assert "Recipe: batch size 8, Adam to learning rate 0.008" in out
    assert f"Saved the model and reports to {tmp_path / 'o'}" in out


@pytest.mark.parametrize(
    "dataset, message",
    [
        ("missing_keys", r"missing.npz: missing key\(s\) y_test"),
        ("/no/such/file.npz", "No such file or folder: '/no/such/file.npz'"),
        ("mnsit", "expected one of 'mnist'"),
    ],
)
def test_train_command_bad_dataset_is_one_error_line(tmp_path, capsys, dataset, message):
    import re

    if dataset == "missing_keys":
        dataset = str(tmp_path / "missing.npz")
        np.savez(
            dataset, x_train=np.zeros((4, 8, 8)), y_train=np.arange(4), x_test=np.zeros((2, 8, 8))
        )
    code = main(["train", "--dataset", dataset, "--out", str(tmp_path / "o")])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("nin-layers train: error: ")
    assert re.search(message, err[-1])
    assert not (tmp_path / "o").exists()


def test_evaluate_command_prints_accuracy_loss_and_per_class(finished_run, capsys):
    model = str(finished_run["out"] / "model.keras")
    assert main(["evaluate", model]) == 0  # dataset read from the run's config.json
    out = capsys.readouterr().out
    metrics = json.loads((finished_run["out"] / "metrics.json").read_text())
    assert f"accuracy {metrics['test_accuracy']:.4f}, loss {metrics['test_loss']:.4f}" in out
    assert "q test set (24 images)" in out
    per_class = [line for line in out.splitlines() if line.strip().endswith("(6 images)")]
    assert len(per_class) == 4


def test_evaluate_command_errors(finished_run, tmp_path, capsys):
    assert main(["evaluate", str(tmp_path / "none.keras")]) == 2
    assert "No such model file" in capsys.readouterr().err
    model = str(finished_run["out"] / "model.keras")
    assert main(["evaluate", model, "--dataset", "digits"]) == 2
    assert "expects images of shape (16, 16, 1) but digits has (8, 8, 1)" in capsys.readouterr().err


def _run_until_paused(command, env, timeout=300):
    """Starts `command`, returns (process, output so far) once it pauses."""
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    watchdog = threading.Timer(timeout, process.kill)
    watchdog.start()
    lines = []
    try:
        for line in process.stdout:
            lines.append(line)
            if line.startswith(PAUSE_MARKER):
                break
    finally:
        watchdog.cancel()
    return process, "".join(lines)


def test_killed_run_resumes_to_the_same_metrics(finished_run, tmp_path):
    out = tmp_path / "resumed"
    command = [sys.executable, "-m", "nin_layers", "train", "--dataset", finished_run["npz"],
               *ARGS, "--out", str(out)]  # fmt: skip
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}

    # 1. SIGKILL after epoch 1 has been backed up.
    process, output = _run_until_paused(command, {**env, PAUSE_ENV: "1"})
    assert f"{PAUSE_MARKER} 1" in output, output
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    state = json.loads((out / "backup" / "state.json").read_text())
    assert state["epoch"] == 1

    # 2. The same command again: resumes at epoch 2, finishes, nothing lost.
    final = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert final.returncode == 0, final.stdout + final.stderr
    assert "1 epoch(s) already done" in final.stdout
    assert not (out / "backup").exists()
    resumed = json.loads((out / "metrics.json").read_text())
    uninterrupted = json.loads((finished_run["out"] / "metrics.json").read_text())
    assert resumed["test_accuracy"] == uninterrupted["test_accuracy"]
    assert resumed["test_loss"] == uninterrupted["test_loss"]
    history = json.loads((out / "history.json").read_text())
    assert history == json.loads((finished_run["out"] / "history.json").read_text())
    assert len(history["loss"]) == 3
