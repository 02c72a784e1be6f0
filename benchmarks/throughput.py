"""Training and inference throughput, each configuration against the tutorial.

Every configuration is timed alternately with the tutorial's recipe in the
same process (reference, candidate, reference, candidate, ...) and reported
as the ratio of their images per second, so that a load change on the
machine hits both sides alike. Configurations:

- (a) the tutorial's recipe against itself: the noise floor of the ratios.
- (b) `AllConvNet.tutorial(head)` with exactly the tutorial's recipe: the
  cost of the subclass and the custom head layer (target: at most 3%).
- (c) the package's default training recipe (`nin_layers.training`).
- one change at a time from the tutorial's recipe: batch size, mixed
  bfloat16, `jit_compile=True` (XLA), a `tf.data` pipeline instead of NumPy
  arrays; and the same changes at batch 256.

The achieved GFLOP/s (FLOPs counted from the layers, see `flops.py`) are
compared with this CPU's theoretical peak and with a measured matrix product.

    python benchmarks/throughput.py [--quick] [--out DIR] [--data PATH]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


from benchmarks import flops as flops_lib
from benchmarks import recipes, report
from benchmarks import tutorial_reference as tutorial
from benchmarks.common import (
    add_common_arguments,
    log,
    machine_info,
    quiet_tensorflow,
    read_json,
    resolve_paths,
    write_json,
)

NAME = "throughput"

# Images per timed segment, repeats (A B pairs) and which configurations run.
SETTINGS = {
    "smoke": {
        "train_images": 256,
        "infer_images": 256,
        "repeats": 1,
        "precise_repeats": 1,
        "configs": "smoke",
    },
    "quick": {
        "train_images": 512,
        "infer_images": 1024,
        "repeats": 2,
        "precise_repeats": 2,
        "configs": "quick",
    },
    "full": {
        # 40 batches of 256: short segments time the per-`fit` overhead (the
        # iterator, callbacks) more than the training steps, which would
        # flatter the slower recipe.
        "train_images": 10240,
        "infer_images": 10240,
        "repeats": 3,
        "precise_repeats": 5,
        "configs": "all",
    },
}
# Groups timed with `precise_repeats` pairs: (b) is held to a 3% limit.
PRECISE_GROUPS = ("a", "b")


# Configurations of the small modes (the full mode runs all of them).
SUBSETS = {
    "smoke": {"default_reshape"},
    "quick": {"allconvnet_reshape", "default_reshape", "bf16_b256", "tfdata_b32"},
}


def configurations(which="all"):
    """The configurations to time, each a dict of `recipes.Recipe` fields."""
    configs = [
        {
            "name": "tutorial_reshape",
            "group": "a",
            "recipe": "tutorial",
            "head": "reshape",
            "label": "(a) tutorial recipe, reshape head (against itself)",
        },
        {
            "name": "tutorial_gap",
            "group": "a",
            "recipe": "tutorial",
            "head": "gap",
            "label": "(a) tutorial recipe, gap head (against itself)",
        },
        {
            "name": "allconvnet_reshape",
            "group": "b",
            "recipe": "allconvnet",
            "head": "reshape",
            "label": "(b) AllConvNet.tutorial('reshape'), tutorial recipe",
        },
        {
            "name": "allconvnet_gap",
            "group": "b",
            "recipe": "allconvnet",
            "head": "gap",
            "label": "(b) AllConvNet.tutorial('gap'), tutorial recipe",
        },
        {
            "name": "default_reshape",
            "group": "c",
            "recipe": "default",
            "head": "reshape",
            "label": "(c) package default recipe, reshape head",
        },
        {
            "name": "default_gap",
            "group": "c",
            "recipe": "default",
            "head": "gap",
            "label": "(c) package default recipe, gap head",
        },
    ]
    for batch in (64, 128, 256, 512):
        configs.append(
            {
                "name": f"batch{batch}",
                "group": "batch",
                "recipe": "allconvnet",
                "head": "reshape",
                "batch_size": batch,
                "label": f"AllConvNet, batch {batch}",
            }
        )
    for batch in (32, 256):
        configs += [
            {
                "name": f"bf16_b{batch}",
                "group": "precision",
                "recipe": "allconvnet",
                "head": "reshape",
                "batch_size": batch,
                "precision": "mixed_bfloat16",
                "label": f"AllConvNet, mixed_bfloat16, batch {batch}",
            },
            {
                "name": f"xla_b{batch}",
                "group": "jit",
                "recipe": "allconvnet",
                "head": "reshape",
                "batch_size": batch,
                "jit_compile": True,
                "label": f"AllConvNet, jit_compile=True, batch {batch}",
            },
            {
                "name": f"tfdata_b{batch}",
                "group": "pipeline",
                "recipe": "allconvnet",
                "head": "reshape",
                "batch_size": batch,
                "pipeline": "tf.data",
                "label": f"AllConvNet, tf.data pipeline, batch {batch}",
            },
        ]
    if which in SUBSETS:
        configs = [c for c in configs if c["name"] in SUBSETS[which]]
    return configs


def _pairs(reference, candidate, what, images, repeats):
    """Times `what` ("train"/"infer") alternately: A B A B ...; returns img/s lists."""
    ref_ips, cand_ips = [], []
    for _ in range(repeats):
        for runner, sink in ((reference, ref_ips), (candidate, cand_ips)):
            seconds = getattr(runner, what)(images)
            sink.append(images / seconds)
    return ref_ips, cand_ips


def _summary(ref_ips, cand_ips):
    ratios = [c / r for r, c in zip(ref_ips, cand_ips, strict=True)]
    return {
        "reference_ips": ref_ips,
        "candidate_ips": cand_ips,
        "ratios": ratios,
        "ratio": statistics.median(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
        "reference_median_ips": statistics.median(ref_ips),
        "candidate_median_ips": statistics.median(cand_ips),
    }


def measure_config(config, data, settings, flop_counts, peak, references):
    """Times one configuration against the tutorial recipe with the same head.

    `references` caches one warmed-up tutorial runner per head; configuration
    (a) gets a second, separate tutorial model.
    """
    x, y = data
    head = config["head"]
    if head not in references:
        references[head] = recipes.make_runner({"recipe": "tutorial", "head": head}, x, y)
        references[head].warm_up()
    reference = references[head]
    candidate = recipes.make_runner(config, x, y)
    candidate.warm_up()
    result = dict(config)
    result["resolved"] = candidate.describe()
    result["reference"] = reference.describe()
    repeats = settings["precise_repeats" if config["group"] in PRECISE_GROUPS else "repeats"]
    images = settings["train_images"]
    # Whole batches only, so no step has a different shape (no XLA retrace).
    batch = max(reference.batch_size, candidate.batch_size)
    images = max(batch, images // batch * batch)
    result["train"] = _summary(*_pairs(reference, candidate, "train", images, repeats))
    result["train"]["images"] = images
    infer_images = max(batch, settings["infer_images"] // batch * batch)
    result["infer"] = _summary(*_pairs(reference, candidate, "infer", infer_images, repeats))
    result["infer"]["images"] = infer_images
    counts = flop_counts[config["head"]]
    peak_key = (
        "bf16_gflops" if "bfloat16" in str(result["resolved"].get("precision")) else ("fp32_gflops")
    )
    for what, per_image in (("train", counts["train"]), ("infer", counts["forward"])):
        for side in ("candidate", "reference"):
            gflops = result[what][f"{side}_median_ips"] * per_image / 1e9
            result[what][f"{side}_gflops"] = gflops
        result[what]["candidate_pct_peak"] = (
            100 * result[what]["candidate_gflops"] / (peak[peak_key])
        )
        result[what]["candidate_pct_matmul"] = (
            100 * result[what]["candidate_gflops"] / (peak["matmul_fp32_gflops"])
        )
    del candidate
    gc.collect()
    return result


def run(out, data_path, mode="full", fresh=False):
    """Runs the throughput benchmark; writes `out/throughput.json`; returns it."""
    quiet_tensorflow()
    settings = SETTINGS[mode]
    path = Path(out) / f"{NAME}.json"
    previous = None if fresh else read_json(path)
    if previous and previous.get("mode") == mode and previous.get("complete"):
        log(f"{NAME}: already complete in {path}, skipping (use --fresh to redo)")
        return previous
    done = {}
    if previous and previous.get("mode") == mode and previous.get("settings") == settings:
        done = {c["name"]: c for c in previous.get("configs", [])}
    started = time.perf_counter()
    (x, y), _ = tutorial.load_mnist(
        data_path, limit=max(settings["train_images"], settings["infer_images"], 512)
    )
    from nin_layers import AllConvNet

    flop_counts = {
        head: flops_lib.count_flops(AllConvNet.tutorial(head)) for head in tutorial.HEADS
    }
    peak = previous.get("peak") if done else None
    if not peak:
        log(f"{NAME}: measuring the matrix-product ceiling")
        peak = flops_lib.cpu_peak()
        seconds = 0.5 if mode != "full" else 3.0
        peak["matmul_fp32_gflops"] = flops_lib.measure_matmul(seconds=seconds)
        peak["matmul_bf16_gflops"] = flops_lib.measure_matmul(dtype="bfloat16", seconds=seconds)
    result = {
        "benchmark": NAME,
        "mode": mode,
        "complete": False,
        "machine": machine_info(),
        "settings": settings,
        "peak": peak,
        "flops": {h: {k: v for k, v in c.items()} for h, c in flop_counts.items()},
        "configs": [],
    }
    configs = configurations(settings["configs"])
    references = {}
    for index, config in enumerate(configs, start=1):
        if config["name"] in done:
            result["configs"].append(done[config["name"]])
            log(f"{NAME} [{index}/{len(configs)}] {config['name']}: done before, kept")
            continue
        log(f"{NAME} [{index}/{len(configs)}] {config['label']} ...")
        try:
            measured = measure_config(config, (x, y), settings, flop_counts, peak, references)
        except recipes.RecipeUnavailable as error:
            measured = dict(config, unavailable=str(error))
            log(f"{NAME}   unavailable: {error}")
        else:
            t, i = measured["train"], measured["infer"]
            log(
                f"{NAME}   train {t['candidate_median_ips']:.0f} img/s "
                f"(x{t['ratio']:.2f} vs {t['reference_median_ips']:.0f}), infer "
                f"{i['candidate_median_ips']:.0f} img/s (x{i['ratio']:.2f}), "
                f"{t['candidate_gflops']:.1f} GFLOP/s training"
            )
        result["configs"].append(measured)
        result["seconds"] = time.perf_counter() - started
        write_json(path, result)
    result["complete"] = True
    result["seconds"] = time.perf_counter() - started
    write_json(path, result)
    log(f"{NAME}: done in {result['seconds']:.0f} s -> {path}")
    return result


def main(argv=None):
    parser = add_common_arguments(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    args = parser.parse_args(argv)
    mode, out, docs = resolve_paths(args)
    run(out, args.data, mode, args.fresh)
    report.build(out, docs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
