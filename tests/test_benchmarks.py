"""Tests of the benchmark scripts: the smoke mode end to end, and their parts.

The smoke mode (`benchmarks/run.py --smoke`) runs every benchmark on a tiny
synthetic MNIST-like file into a temporary folder, so it neither needs the
real MNIST file nor touches the committed results and docs.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks import accuracy, flops, report  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _fake_mnist(path, n_train=320, n_test=160):
    """Random 28x28 digits whose class is a bright square's position (learnable)."""
    rng = np.random.default_rng(0)

    def make(n):
        y = rng.integers(0, 10, n).astype("uint8")
        x = rng.integers(0, 40, (n, 28, 28)).astype("uint8")
        for i, label in enumerate(y):
            row, col = divmod(int(label), 5)
            x[i, 4 + 10 * row : 12 + 10 * row, 2 + 5 * col : 6 + 5 * col] = 255
        return x, y

    x_train, y_train = make(n_train)
    x_test, y_test = make(n_test)
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return path


def _run(args, cwd):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "run.py"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_smoke_run_writes_results_and_page_then_resumes(tmp_path):
    data = _fake_mnist(tmp_path / "mnist.npz")
    out, docs = tmp_path / "results", tmp_path / "docs"
    committed = sorted(p.name for p in (REPO / "benchmarks" / "results").glob("*"))
    args = ["--smoke", "--out", str(out), "--docs", str(docs), "--data", str(data)]
    result = _run(args, tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    # Progress lines were printed.
    assert "throughput [1/1]" in result.stdout
    assert "epoch 1: test accuracy" in result.stdout

    parts = {
        name: json.loads((out / f"{name}.json").read_text())
        for name in ("throughput", "accuracy", "tuners")
    }
    for name, part in parts.items():
        assert part["mode"] == "smoke" and part["complete"] is True, name
        machine = part["machine"]
        assert machine["cpu"]["cores"] >= 1 and machine["tensorflow"] and machine["date"]

    throughput = parts["throughput"]
    (config,) = throughput["configs"]
    assert config["name"] == "default_reshape"
    assert config["resolved"]["batch_size"] >= 32 and config["resolved"]["pipeline"] == "tf.data"
    for what in ("train", "infer"):
        assert config[what]["ratio"] > 0 and config[what]["candidate_gflops"] > 0
    peak = throughput["peak"]
    assert peak["fp32_gflops"] > 0 and peak["matmul_fp32_gflops"] > 0 and peak["assumption"]
    assert throughput["flops"]["reshape"]["forward"] > 1e6

    runs = parts["accuracy"]["runs"]
    assert sorted(r["key"] for r in runs) == ["default/reshape/0", "tutorial/reshape/0"]
    for run in runs:
        assert len(run["epochs"]) == 1 and 0.0 <= run["test_accuracy"] <= 1.0
        assert run["wall_seconds"] > 0 and run["eval_seconds"] > 0
        assert set(run["time_to"]) == {"0.980", "0.990", "0.992"}

    (tuner,) = parts["tuners"]["tuners"]
    assert tuner["tuner"] == "random" and tuner["trials"] == 1 and tuner["epochs_trained"] == 1
    assert tuner["best_width"] in (8, 16, 32, 64, 128, 256, 512, 1024)
    assert len(tuner["memory_profile"]["rss_mib"]) == 2 and tuner["peak_rss_mib"] > 0

    page = (docs / "benchmarks.md").read_text()
    assert "These numbers come from a `smoke` run" in page
    for heading in (
        "## Targets",
        "## Throughput",
        "## Accuracy",
        "## Tuners",
        "### How far from the machine's limit",
        "### FLOPs per image",
    ):
        assert heading in page
    assert "default recipe >= x3 the tutorial's training images/s (reshape)" in page
    images = [
        line.split("](")[1].rstrip(")") for line in page.splitlines() if line.startswith("![")
    ]
    assert len(images) == 3
    for image in images:
        assert (docs / image).read_bytes()[:8] == PNG_MAGIC
    assert (out / "readme_numbers.md").read_text().count("|") > 6
    # Nothing was written into the committed results.
    assert sorted(p.name for p in (REPO / "benchmarks" / "results").glob("*")) == committed

    # Run again: every finished benchmark is skipped.
    again = _run(args, tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("already complete") == 3


def test_run_rejects_unknown_parts_and_missing_data(tmp_path):
    result = _run(["--smoke", "--only", "speed", "--out", str(tmp_path)], tmp_path)
    assert result.returncode == 2 and "throughput, tuners, accuracy" in result.stderr
    result = _run(
        ["--smoke", "--data", str(tmp_path / "none.npz"), "--out", str(tmp_path)], tmp_path
    )
    assert result.returncode == 2 and "no MNIST file" in result.stderr


@pytest.mark.parametrize(
    "flags, fp32, bf16",
    [
        (["avx", "avx2", "fma"], 32, 32),
        (["avx", "avx2", "fma", "avx512f"], 64, 64),
        (["avx", "avx2", "fma", "avx512f", "avx512_bf16"], 64, 128),
        (["avx", "avx2", "fma", "avx512f", "amx_bf16", "amx_tile"], 64, 1024),
        (["avx"], 16, 16),
    ],
)
def test_cpu_peak_from_flags(flags, fp32, bf16):
    info = {"flags": flags, "cores": 4, "mhz": 2500.0, "vendor": "GenuineIntel"}
    peak = flops.cpu_peak(info)
    assert peak["fp32_flops_per_cycle"] == fp32 and peak["bf16_flops_per_cycle"] == bf16
    assert peak["fp32_gflops"] == pytest.approx(4 * 2.5 * fp32)
    assert peak["bf16_gflops"] == pytest.approx(4 * 2.5 * bf16)
    assert "4 cores x 2.50 GHz" in peak["assumption"]


def test_cpu_peak_warns_about_zen1_half_width_fma():
    info = {
        "flags": ["avx2", "fma"],
        "cores": 2,
        "mhz": 2000.0,
        "vendor": "AuthenticAMD",
        "family": 23,
        "model_number": 1,
    }
    assert "halve this peak" in flops.cpu_peak(info)["assumption"]


def test_count_flops_by_hand():
    import keras

    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Conv2D(3, 1)(x)
    outputs = keras.layers.GlobalAveragePooling2D()(x)
    counted = flops.count_flops(keras.Model(inputs, outputs))
    conv1 = 2 * 8 * 8 * 4 * 9 + 8 * 8 * 4 + 8 * 8 * 4  # multiply-adds, bias, relu
    pool = 4 * 4 * 4 * 4
    conv2 = 2 * 4 * 4 * 3 * 4 + 4 * 4 * 3  # multiply-adds, bias
    gap = 4 * 4 * 3
    assert counted["forward"] == conv1 + pool + conv2 + gap
    assert counted["macs"] == 2 * 8 * 8 * 4 * 9 + 2 * 4 * 4 * 3 * 4
    # Backward: the first conv has no input gradient, the second has both.
    backward = (2 * 8 * 8 * 4 * 9 + 2 * 8 * 8 * 4) + pool + (2 * 2 * 4 * 4 * 3 * 4 + 48) + gap
    assert counted["train"] == counted["forward"] + backward
    assert [row["type"] for row in counted["layers"]] == [
        "Conv2D",
        "MaxPooling2D",
        "Conv2D",
        "GlobalAveragePooling2D",
    ]


def test_count_flops_sees_inside_the_custom_head():
    from nin_layers import AllConvNet

    counted = flops.count_flops(AllConvNet.tutorial("reshape"))
    names = [row["layer"] for row in counted["layers"]]
    assert "bottleneck" in names and "classifier" in names
    bottleneck = next(r for r in counted["layers"] if r["layer"] == "bottleneck")
    assert bottleneck["output"] == [3, 3, 128]
    assert bottleneck["forward_flops"] == 2 * 9 * 64 * 128 + 2 * 9 * 128  # + bias + relu
    assert counted["uncounted"] == []


def _run_record(recipe, head, seed, accuracies, seconds):
    epochs = [
        {"epoch": i + 1, "train_seconds": s, "test_accuracy": a}
        for i, (a, s) in enumerate(zip(accuracies, seconds, strict=True))
    ]
    return {
        "recipe": recipe,
        "head": head,
        "seed": seed,
        "epochs": epochs,
        "test_accuracy": accuracies[-1],
        "wall_seconds": seconds[-1],
        "eval_seconds": 1.0,
        "images_per_second": 100.0,
        "time_to": {
            f"{t:.3f}": next((e["train_seconds"] for e in epochs if e["test_accuracy"] >= t), None)
            for t in accuracy.THRESHOLDS
        },
    }


def test_accuracy_targets_and_report_verdicts():
    runs = [
        _run_record("tutorial", "reshape", 0, [0.985, 0.991, 0.993], [100, 200, 300]),
        _run_record("tutorial", "reshape", 1, [0.984, 0.990, 0.991], [100, 200, 300]),
        _run_record("default", "reshape", 0, [0.990, 0.993], [40, 80]),
        _run_record("default", "reshape", 1, [0.989, 0.992], [40, 80]),
    ]
    summary, targets = accuracy.summarize(runs, {"heads": ["reshape"]})
    tut = summary["tutorial/reshape"]
    assert tut["test_accuracy"]["mean"] == pytest.approx(0.992)
    assert tut["test_accuracy"]["std"] == pytest.approx(np.std([0.993, 0.991], ddof=1))
    assert tut["time_to"]["0.992"]["reached"] == 1
    target = targets["reshape"]
    assert target["budget_seconds"] == pytest.approx(100)
    assert target["default_time_to_goal_seconds"] == pytest.approx(80)
    assert target["time_met"] and target["accuracy_met"]

    # A slower default recipe misses the time target, and the page says by how much.
    runs[2] = _run_record("default", "reshape", 0, [0.990, 0.993], [75, 150])
    _, targets = accuracy.summarize(runs, {"heads": ["reshape"]})
    assert targets["reshape"]["default_time_to_goal_seconds"] == pytest.approx(115)
    assert targets["reshape"]["time_met"] is False
    verdicts = {row[0]: row[2] for row in report.targets(None, {"targets": targets})}
    time_row = next(k for k in verdicts if "1/3 of the tutorial's wall time" in k)
    assert verdicts[time_row] == "**missed** by 15.0 s (15% over the budget)"

    # A default recipe that never gets there: the page gives the shortfall.
    runs[3] = _run_record("default", "reshape", 1, [0.985, 0.989], [40, 80])
    _, targets = accuracy.summarize(runs, {"heads": ["reshape"]})
    verdicts = {row[0]: row[2] for row in report.targets(None, {"targets": targets})}
    assert verdicts[time_row] == "**missed**: final accuracy 99.10% (mean), 0.10 points short"
    final_row = next(k for k in verdicts if "final test accuracy" in k)
    assert verdicts[final_row] == "**missed** by 0.10 points"

    # The mean is above the goal, but one seed never reached it.
    runs[2] = _run_record("default", "reshape", 0, [0.990, 0.996], [75, 150])
    _, targets = accuracy.summarize(runs, {"heads": ["reshape"]})
    verdicts = {row[0]: row[2] for row in report.targets(None, {"targets": targets})}
    assert verdicts[time_row] == "**missed**: only 1/2 runs got there"
    assert verdicts[final_row] == "**met**"


def test_speed_and_overhead_verdicts():
    def config(name, train, infer):
        def part(ratio):
            return {
                "ratio": ratio,
                "candidate_median_ips": 100 * ratio,
                "reference_median_ips": 100.0,
            }

        return {"name": name, "train": part(train), "infer": part(infer)}

    throughput = {
        "configs": [
            config("default_reshape", 2.4, 1.5),
            config("default_gap", 3.3, 1.5),
            config("allconvnet_reshape", 0.99, 0.95),
        ]
    }
    verdicts = {row[0]: row[2] for row in report.targets(throughput, None)}
    assert verdicts["default recipe >= x3 the tutorial's training images/s (reshape)"] == (
        "**missed** by 20% (x2.40 of x3)"
    )
    assert verdicts["default recipe >= x3 the tutorial's training images/s (gap)"] == "**met**"
    overhead = {k: v for k, v in verdicts.items() if k.startswith("AllConvNet")}
    assert list(overhead.values()) == ["**met**", "**missed** by 2.3 points"]


def test_a_speed_shortfall_under_one_percent_keeps_a_decimal():
    from benchmarks import report

    assert report._speed_shortfall(2.995) == "**missed** by 0.2% (x2.995 of x3)"
    assert report._speed_shortfall(2.4) == "**missed** by 20% (x2.40 of x3)"
