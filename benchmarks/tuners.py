"""Keras Tuner strategies on the same budget: wall time, best width, memory.

Searches the bottleneck width of the reshape head (`AllConvNetHyperModel`:
8 to 1024, powers of two) with each of grid, random, Hyperband and
Bayesian search through `nin_layers.tuning.search_bottleneck_width`, on the
same MNIST subset and the same budget (trials x epochs per trial; Hyperband
gets `max_epochs` = epochs per trial and uses its own schedule, and the
epochs every tuner really trained are counted and reported). The best trial's
model is then evaluated on the test set. Memory: resident memory after
each trial of the search, and `nin_layers.tuning.memory_profile` (many tiny
trials) for the growth over a long search.

In the full mode each tuner runs in its own process, so that its peak memory
is its own.

    python benchmarks/tuners.py [--quick] [--out DIR] [--data PATH]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from benchmarks import report
from benchmarks import tutorial_reference as tutorial
from benchmarks.common import (
    add_common_arguments,
    log,
    machine_info,
    memory_mib,
    quiet_tensorflow,
    read_json,
    resolve_paths,
    write_json,
)

NAME = "tuners"
TUNERS = ("grid", "random", "hyperband", "bayesian")

SETTINGS = {
    "smoke": {
        "train": 128,
        "val": 64,
        "test": 128,
        "epochs": 1,
        "max_trials": 1,
        "batch_size": 32,
        "memory_trials": 2,
        "tuners": ["random"],
        "isolate": False,
    },
    "quick": {
        "train": 512,
        "val": 256,
        "test": 500,
        "epochs": 1,
        "max_trials": 2,
        "batch_size": 64,
        "memory_trials": 3,
        "tuners": list(TUNERS),
        "isolate": False,
    },
    "full": {
        "train": 4000,
        "val": 1000,
        "test": None,
        "epochs": 3,
        "max_trials": 4,
        "batch_size": 64,
        "memory_trials": 12,
        "tuners": list(TUNERS),
        "isolate": True,
    },
}


def _epoch_counter():
    import keras

    class EpochCounter(keras.callbacks.Callback):
        """Counts every epoch of every trial (keras-tuner deep-copies callbacks)."""

        def __init__(self):
            super().__init__()
            self.count = 0

        def __deepcopy__(self, memo):
            return self

        def on_epoch_end(self, epoch, logs=None):
            self.count += 1

    return EpochCounter()


def _data(data_path, settings):
    (x, y), (x_test, y_test) = tutorial.load_mnist(
        data_path, limit=settings["train"] + settings["val"], test_limit=settings["test"]
    )
    x, x_test = x.astype("float32"), x_test.astype("float32")
    train = settings["train"]
    return (x[:train], y[:train]), (x[train:], y[train:]), (x_test, y_test)


def memory_profile(name, trials, seed=0):
    """Resident memory after each of `trials` tiny trials of tuner `name`.

    Like `nin_layers.tuning.memory_profile` (random 16x16 images, a two-block
    `AllConvNet`, widths 2 to 4096 on a log scale), but Hyperband gets
    `max_epochs=9` so that its schedule has many trials (with `max_epochs=1`
    it has one), capped at `trials`.
    """
    from nin_layers import tuning

    rng = np.random.default_rng(seed)
    x = rng.random((64, 16, 16, 1), dtype=np.float32)
    y = rng.integers(0, 10, 64)
    start_mib, _ = memory_mib()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as directory:
        hypermodel = tuning.AllConvNetHyperModel(
            num_classes=10,
            input_shape=(16, 16, 1),
            min_width=2,
            max_width=4096,
            width_step=None,
            filters=(4, 8),
        )
        instance = tuning.make_tuner(
            hypermodel,
            name,
            max_trials=trials,
            epochs=9 if name == "hyperband" else None,
            seed=seed,
            directory=directory,
            overwrite=True,
            show_progress=False,
        )
        instance.search(x, y, validation_data=(x, y), epochs=1, batch_size=32, verbose=0)
        rss = list(instance.trial_rss_mib)
    _, peak = memory_mib()
    return {
        "trials": len(rss),
        "rss_mib": rss,
        "start_mib": start_mib,
        "peak_mib": peak,
        "growth_mib": rss[-1] - rss[min(2, len(rss) - 1)],
        "seconds": time.perf_counter() - start,
    }


def run_tuner(name, out, data_path, mode):
    """Runs one tuner's search and memory profile; writes `tuners.<name>.json`."""
    quiet_tensorflow()
    from nin_layers import tuning

    settings = SETTINGS[mode]
    (x, y), validation, (x_test, y_test) = _data(data_path, settings)
    start_mib, _ = memory_mib()
    counter = _epoch_counter()
    log(
        f"{NAME} {name}: searching widths on {len(x):,} images, "
        f"{settings['max_trials']} trials x {settings['epochs']} epochs"
    )
    with tempfile.TemporaryDirectory() as directory:
        start = time.perf_counter()
        result = tuning.search_bottleneck_width(
            x,
            y,
            validation,
            tuner=name,
            epochs=settings["epochs"],
            batch_size=settings["batch_size"],
            max_trials=None if name == "hyperband" else settings["max_trials"],
            seed=0,
            directory=directory,
            overwrite=True,
            callbacks=[counter],
        )
        seconds = time.perf_counter() - start
        best = result.best
        test_accuracy = None
        if best is not None:
            probabilities = result.best_model().predict(x_test, batch_size=1000, verbose=0)
            test_accuracy = float((np.argmax(probabilities, axis=1) == y_test).mean())
        trial_rss = list(getattr(result.tuner, "trial_rss_mib", []))
    log(
        f"{NAME} {name}: best width {best and best.get('bottleneck_width')}, "
        f"test accuracy {test_accuracy}, {seconds:.1f} s, {counter.count} epochs"
    )
    log(f"{NAME} {name}: memory over {settings['memory_trials']} tiny trials ...")
    profile = memory_profile(name, settings["memory_trials"])
    _, peak_mib = memory_mib()
    record = {
        "tuner": name,
        "seconds": seconds,
        "trials": len(result.rows),
        "epochs_trained": counter.count,
        "best": best,
        "best_width": best and best.get("bottleneck_width"),
        "best_val_accuracy": best and best.get("val_accuracy"),
        "best_test_accuracy": test_accuracy,
        "rows": result.rows,
        "rss_start_mib": start_mib,
        "rss_after_trial_mib": trial_rss,
        "memory_profile": profile,
        "peak_rss_mib": peak_mib,
    }
    log(
        f"{NAME} {name}: memory {profile['rss_mib'][0]:.0f} -> {profile['rss_mib'][-1]:.0f} "
        f"MiB over {profile['trials']} trials, peak {peak_mib:.0f} MiB"
    )
    state = {
        "benchmark": f"{NAME}.{name}",
        "mode": mode,
        "settings": settings,
        "machine": machine_info(),
        "result": record,
    }
    write_json(Path(out) / f"{NAME}.{name}.json", state)
    return state


def run(out, data_path, mode="full", fresh=False):
    """Runs every tuner (each in a subprocess in the full mode); writes `tuners.json`."""
    settings = SETTINGS[mode]
    path = Path(out) / f"{NAME}.json"
    previous = None if fresh else read_json(path)
    if previous and previous.get("mode") == mode and previous.get("complete"):
        log(f"{NAME}: already complete in {path}, skipping (use --fresh to redo)")
        return previous
    started = time.perf_counter()
    results = []
    for name in settings["tuners"]:
        part = Path(out) / f"{NAME}.{name}.json"
        done = None if fresh else read_json(part)
        if not (done and done.get("mode") == mode and done.get("settings") == settings):
            if settings["isolate"]:
                command = [
                    sys.executable,
                    str(Path(__file__).resolve()),
                    "--tuner",
                    name,
                    "--out",
                    str(out),
                    "--data",
                    str(data_path),
                ]
                command += {"smoke": ["--smoke"], "quick": ["--quick"], "full": []}[mode]
                log(f"{NAME}: {name} in a new process")
                subprocess.run(command, check=True)
                done = read_json(part)
            else:
                done = run_tuner(name, out, data_path, mode)
        else:
            log(f"{NAME} {name}: done before, kept")
        results.append(done["result"])
    result = {
        "benchmark": NAME,
        "mode": mode,
        "complete": True,
        "machine": machine_info(),
        "settings": settings,
        "tuners": results,
        "seconds": time.perf_counter() - started,
    }
    write_json(path, result)
    log(f"{NAME}: done in {result['seconds']:.0f} s -> {path}")
    return result


def main(argv=None):
    parser = add_common_arguments(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument("--tuner", choices=TUNERS, help="run only this tuner, in-process")
    args = parser.parse_args(argv)
    mode, out, docs = resolve_paths(args)
    if args.tuner:
        run_tuner(args.tuner, out, args.data, mode)
    else:
        run(out, args.data, mode, args.fresh)
        report.build(out, docs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
