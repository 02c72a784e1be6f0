"""`nin-layers tune`: arguments, outputs, and resuming after `kill -9`.

The data is a .npz of 80 8x8 images in keras layout written to a temporary
folder; the model has one conv block of 4 filters; trials train one epoch.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import keras
import numpy as np
import pytest

from nin_layers import cli, tuning

ROOT = Path(__file__).resolve().parents[1]


def write_tiny_npz(path, seed=0):
    """80 training and 20 test 8x8 uint8 images; the class is a bright band's row."""
    rng = np.random.default_rng(seed)

    def make(count):
        y = rng.integers(0, 3, count)
        x = rng.random((count, 8, 8)) * 60
        for i, label in enumerate(y):
            x[i, 2 * label : 2 * label + 3, :] += 180
        return x.clip(0, 255).astype("uint8"), y.astype("uint8")

    (x_train, y_train), (x_test, y_test) = make(80), make(20)
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return str(path)


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    return write_tiny_npz(tmp_path_factory.mktemp("data") / "tiny.npz")


def tune_argv(npz, directory, *extra):
    return [
        "tune",
        "--dataset",
        npz,
        "--tuner",
        "random",
        "--max-trials",
        "2",
        "--epochs",
        "1",
        "--min-width",
        "2",
        "--max-width",
        "16",
        "--filters",
        "4",
        "--batch-size",
        "16",
        "--directory",
        str(directory),
        *extra,
    ]


class Process:
    """A subprocess whose merged output is read line by line, with deadlines."""

    def __init__(self, argv, env=None):
        environment = dict(os.environ, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="2")
        environment.update(env or {})
        self.popen = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=environment,
            cwd=ROOT,
        )
        self.lines = []
        self._queue = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.popen.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for_line(self, predicate, timeout):
        """Returns the first new line matching `predicate`; fails on timeout or exit."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"timed out; output so far:\n{self.output()}")
            try:
                line = self._queue.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"process exited early; output:\n{self.output()}")
            self.lines.append(line)
            if predicate(line):
                return line

    def wait(self, timeout):
        """Waits for the exit and the end of the output; returns the exit code."""
        try:
            code = self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"did not exit in {timeout} s; output:\n{self.output()}") from None
        self._reader.join(timeout=10)
        while True:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                self.lines.append(line)
        return code

    def kill(self):
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGKILL)
            self.popen.wait(timeout=30)

    def output(self):
        return "\n".join(self.lines)


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def trial_metrics(directory):
    found = {}
    for path in sorted(Path(directory).glob("bottleneck_width/trial_*/trial.json")):
        state = json.loads(path.read_text())
        metrics = state["metrics"]["metrics"]
        found[state["trial_id"]] = {
            "status": state["status"],
            "values": state["hyperparameters"]["values"],
            **{
                name: metrics[name]["observations"][0]["value"]
                for name in ("val_loss", "val_accuracy", "num_params")
                if name in metrics
            },
        }
    return found


# --------------------------------------------------------------- arguments
def parser():
    result = argparse.ArgumentParser(prog="nin-layers tune")
    tuning.add_tune_arguments(result)
    return result


def test_defaults():
    args = parser().parse_args([])
    assert args.dataset == "mnist_sample"
    assert args.tuner == "hyperband"
    assert (args.min_width, args.max_width, args.width_step) == (8, 1024, 2)
    assert (args.max_trials, args.epochs, args.executions_per_trial) == (10, 3, 1)
    assert args.filters == (32, 64, 64)
    assert args.overwrite is False and args.tuner_id is None


@pytest.mark.parametrize(
    "argv",
    [
        ["--tuner", "evolution"],
        ["--min-width", "0"],
        ["--max-trials", "-1"],
        ["--validation-split", "1.5"],
        ["--filters", "4,x"],
        ["--oracle-port", "http"],
    ],
)
def test_bad_arguments_exit_with_usage(argv, capsys):
    with pytest.raises(SystemExit) as info:
        parser().parse_args(argv)
    assert info.value.code == 2
    assert "usage" in capsys.readouterr().err


def test_width_range_is_checked_before_loading_data(tmp_path, capsys):
    code = cli.main(tune_argv(str(tmp_path / "missing.npz"), tmp_path, "--min-width", "64"))
    assert code == 2
    assert "max_width" in capsys.readouterr().err


def test_distributed_flags_must_come_together(tmp_path, monkeypatch, capsys):
    for variable in ("KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT"):
        monkeypatch.delenv(variable, raising=False)
    code = cli.main(tune_argv("unused.npz", tmp_path, "--oracle-ip", "127.0.0.1"))
    assert code == 2
    error = capsys.readouterr().err
    assert "KERASTUNER_ORACLE_PORT" in error and "KERASTUNER_TUNER_ID" in error


def test_resuming_with_other_settings_is_refused(npz, tmp_path, capsys):
    project = tmp_path / "bottleneck_width"
    project.mkdir()
    args = parser().parse_args(tune_argv(npz, tmp_path)[1:])
    settings = tuning._settings(args)
    settings["max_width"] = 1024
    (project / "nin_layers_tune.json").write_text(json.dumps(settings))
    code = cli.main(tune_argv(npz, tmp_path))
    assert code == 2
    error = capsys.readouterr().err
    assert "max_width: 1024 -> 16" in error and "--overwrite" in error


# -------------------------------------------------------- full runs, resume
@pytest.fixture(scope="module")
def uninterrupted(npz, tmp_path_factory):
    """An uninterrupted in-process run: (directory, printed lines)."""
    directory = tmp_path_factory.mktemp("uninterrupted")
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = cli.main(tune_argv(npz, directory))
    assert code == 0, buffer.getvalue()
    return directory, buffer.getvalue().splitlines()


def test_tune_prints_progress_table_and_best_width(uninterrupted):
    directory, lines = uninterrupted
    text = "\n".join(lines)
    for number in (1, 2):
        assert f"Trial {number} of 2: bottleneck_width=" in text
        assert f"Trial {number} of 2 done: val_accuracy " in text
    assert "best so far" in text
    header = next(line for line in lines if "parameters" in line and "width" in line)
    assert "val_accuracy (mean +- std)" in header and "epochs" in header and "seconds" in header

    project = directory / "bottleneck_width"
    rows = read_csv(project / "results.csv")
    assert len(rows) == 2 and all(r["status"] == "COMPLETED" for r in rows)
    payload = json.loads((project / "results.json").read_text())
    best = payload["best"]
    assert best["val_accuracy"] == max(float(r["val_accuracy"]) for r in rows)
    assert payload["settings"]["tuner"] == "random"
    assert (project / "results.png").read_bytes().startswith(b"\x89PNG")
    # The best width is the last line printed.
    assert lines[-1] == f"Best bottleneck width: {best['bottleneck_width']}"

    model = keras.saving.load_model(project / "best_model.keras")
    assert model.head.bottleneck_width == best["bottleneck_width"]
    assert model.count_params() == best["parameters"]
    assert model.predict(np.zeros((2, 8, 8, 1), "float32"), verbose=0).shape == (2, 3)


def test_kill_9_then_same_command_resumes_to_the_same_table(npz, tmp_path, uninterrupted):
    argv = tune_argv(npz, tmp_path)
    process = Process([sys.executable, "-m", "nin_layers", *argv])
    try:
        process.wait_for_line(lambda line: line.startswith("Trial 2 of 2:"), timeout=150)
        process.kill()
    finally:
        process.kill()
    before = trial_metrics(tmp_path)
    assert sorted(t["status"] for t in before.values()) == ["COMPLETED", "RUNNING"]
    assert not (tmp_path / "bottleneck_width" / "results.csv").exists()

    # The same command again, in this process.
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = cli.main(argv)
    output = buffer.getvalue()
    assert code == 0, output
    assert "1 finished trial(s) kept, re-running interrupted trial(s) 2" in output
    assert "Trial 1 of 2:" not in output  # the finished trial is not re-run
    assert "Trial 2 of 2:" in output and "Trial 2 of 2 done:" in output

    reference_dir, reference_lines = uninterrupted
    after = trial_metrics(tmp_path)
    reference = trial_metrics(reference_dir)
    assert after == reference

    def without_seconds(rows):
        return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]

    resumed_rows = read_csv(tmp_path / "bottleneck_width" / "results.csv")
    reference_rows = read_csv(reference_dir / "bottleneck_width" / "results.csv")
    assert without_seconds(resumed_rows) == without_seconds(reference_rows)
    assert output.splitlines()[-1] == reference_lines[-1]
