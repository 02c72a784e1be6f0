"""Distributed `nin-layers tune`: keras-tuner's chief/worker mode on 127.0.0.1.

One chief (serves the search over gRPC) and two workers (run the trials),
each a separate `python -m nin_layers tune` process on a free port. Every
wait is bounded and every process is killed in `finally`.
"""

from __future__ import annotations

import csv
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 240  # seconds for a whole search, start-up included
FINISHED = re.compile(r"^\[(?P<worker>\w+)\] trial (?P<trial>\d+) finished: (?P<status>\w+)$")
STARTED = re.compile(r"^\[(?P<worker>\w+)\] trial (?P<trial>\d+) started: ")
SEARCHING = re.compile(r"^Searching the bottleneck width")


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    rng = np.random.default_rng(0)

    def make(count):
        y = rng.integers(0, 3, count)
        x = rng.random((count, 8, 8)) * 60
        for i, label in enumerate(y):
            x[i, 2 * label : 2 * label + 3, :] += 180
        return x.clip(0, 255).astype("uint8"), y.astype("uint8")

    path = tmp_path_factory.mktemp("data") / "tiny.npz"
    (x_train, y_train), (x_test, y_test) = make(80), make(20)
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return str(path)


class Process:
    """A `nin-layers tune` subprocess whose output is read line by line."""

    def __init__(self, argv, tuner_id, port, use_flags):
        environment = dict(os.environ, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="2")
        for variable in ("KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT"):
            environment.pop(variable, None)
        if use_flags:
            argv = [*argv, "--tuner-id", tuner_id, "--oracle-ip", "127.0.0.1"]
            argv += ["--oracle-port", str(port)]
        else:
            environment.update(
                KERASTUNER_TUNER_ID=tuner_id,
                KERASTUNER_ORACLE_IP="127.0.0.1",
                KERASTUNER_ORACLE_PORT=str(port),
            )
        self.name = tuner_id
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "nin_layers", *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=environment,
            cwd=ROOT,
        )
        self.lines = []
        self._queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.popen.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def _drain(self, timeout=0.0):
        try:
            line = self._queue.get(timeout=timeout) if timeout else self._queue.get_nowait()
        except queue.Empty:
            return False
        if line is not None:
            self.lines.append(line)
        return line is not None

    def wait_for_line(self, pattern, deadline):
        while time.monotonic() < deadline:
            if self._drain(timeout=0.2):
                match = pattern.match(self.lines[-1])
                if match:
                    return match
            elif self.popen.poll() is not None and self._queue.empty():
                break
        raise AssertionError(f"{self.name}: no line matching {pattern.pattern}:\n{self.output()}")

    def wait(self, deadline):
        try:
            code = self.popen.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.name} did not exit in time:\n{self.output()}") from None
        while self._drain(timeout=1.0):
            pass
        return code

    def kill(self):
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGKILL)
            self.popen.wait(timeout=30)

    def output(self):
        return "\n".join(self.lines)

    def finished(self):
        return [FINISHED.match(line) for line in self.lines if FINISHED.match(line)]


def tune_argv(npz, directory, max_trials):
    return [
        "tune",
        "--dataset",
        npz,
        "--tuner",
        "random",
        "--max-trials",
        str(max_trials),
        "--epochs",
        "1",
        "--min-width",
        "2",
        "--max-width",
        "64",
        "--filters",
        "4",
        "--batch-size",
        "16",
        "--directory",
        str(directory),
    ]


def chief_results(directory):
    with open(Path(directory) / "bottleneck_width" / "results.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_chief_and_two_workers_run_every_trial_exactly_once(npz, tmp_path):
    port, max_trials = free_port(), 4
    argv = tune_argv(npz, tmp_path, max_trials)
    processes = []
    deadline = time.monotonic() + TIMEOUT
    try:
        # The chief through flags, the workers through environment variables.
        # All three start together. (A keras-tuner worker that first connects
        # after the chief has finished would wait for it for an hour; the
        # workers start together, so each gets trials long before that.)
        chief = Process(argv, "chief", port, use_flags=True)
        processes.append(chief)
        workers = [Process(argv, f"worker{i}", port, use_flags=False) for i in range(2)]
        processes += workers
        codes = {p.name: p.wait(deadline) for p in processes}
    finally:
        for process in processes:
            process.kill()
    assert codes == {"chief": 0, "worker0": 0, "worker1": 0}, chief.output()

    finished = [m for w in workers for m in w.finished()]
    trials = sorted(int(m["trial"]) for m in finished)
    assert trials == list(range(1, max_trials + 1))  # each trial exactly once
    assert all(m["status"] == "COMPLETED" for m in finished)
    # Both workers took part (the chief hands a trial to whoever asks).
    assert all(w.finished() for w in workers), [w.output() for w in workers]

    rows = chief_results(tmp_path)
    assert sorted(int(r["trial"]) for r in rows) == trials
    assert all(r["status"] == "COMPLETED" for r in rows)
    assert chief.lines[-1].startswith("Best bottleneck width: ")
    assert (tmp_path / "bottleneck_width" / "best_model.keras").exists()
    for worker in workers:
        assert "The chief prints the results." in worker.lines[-1]


def test_worker_killed_mid_trial_and_restarted_loses_no_trial(npz, tmp_path):
    port, max_trials = free_port(), 2
    argv = tune_argv(npz, tmp_path, max_trials)
    processes = []
    deadline = time.monotonic() + TIMEOUT
    try:
        chief = Process(argv, "chief", port, use_flags=True)
        victim = Process(argv, "worker0", port, use_flags=True)
        processes += [chief, victim]
        started = victim.wait_for_line(STARTED, deadline)
        victim.kill()  # kill -9 in the middle of its trial
        assert victim.wait(deadline) == -signal.SIGKILL
        assert not victim.finished()  # it was killed before finishing the trial

        restarted = Process(argv, "worker0", port, use_flags=True)
        processes.append(restarted)
        codes = [p.wait(deadline) for p in (restarted, chief)]
    finally:
        for process in processes:
            process.kill()
    assert codes == [0, 0], "\n\n".join(p.output() for p in processes)

    # The restarted worker (same id) got its interrupted trial back first,
    # then ran the rest: every trial ran to completion once.
    redone = restarted.finished()
    assert [int(m["trial"]) for m in redone] == list(range(1, max_trials + 1))
    assert redone[0]["trial"] == started["trial"]
    assert all(m["status"] == "COMPLETED" for m in redone)

    rows = chief_results(tmp_path)
    assert len(rows) == max_trials
    assert all(r["status"] == "COMPLETED" for r in rows)
    assert chief.lines[-1].startswith("Best bottleneck width: ")
