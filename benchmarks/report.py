"""Turns the JSON results into `docs/benchmarks.md` and its PNG plots.

Reads `throughput.json`, `accuracy.json` and `tuners.json` from the results
folder (any of them may be missing: its section then says so), and writes
`<docs>/benchmarks.md` with the tables, the targets (met or missed, and by
how much) and the plots in `<docs>/img/benchmarks/`. It also writes
`<results>/readme_numbers.md`, the few lines the README quotes.

    python benchmarks/report.py [--out RESULTS] [--docs DOCS]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import DEFAULT_DOCS, DEFAULT_RESULTS, log, read_json

IMAGE_DIR = Path("img") / "benchmarks"
SPEED_TARGET = 3.0  # default recipe / tutorial recipe, training images per second
OVERHEAD_LIMIT = 0.03  # AllConvNet may cost at most 3% more than the tutorial's model
RECIPE_NAMES = {"tutorial": "tutorial recipe", "default": "package default"}
TUNER_COLORS = {
    "grid": "tab:blue",
    "random": "tab:orange",
    "hyperband": "tab:green",
    "bayesian": "tab:red",
}


# ------------------------------------------------------------------ format
def _num(value, digits=0, suffix=""):
    if value is None:
        return "-"
    return f"{value:,.{digits}f}{suffix}"


def _pct(value, digits=2):
    return "-" if value is None else f"{100 * value:.{digits}f}%"


def _mean_std(stats, scale=1.0, digits=2, suffix=""):
    if not stats or stats.get("mean") is None:
        return "-"
    text = f"{stats['mean'] * scale:.{digits}f}"
    if stats.get("n", 0) > 1:
        text += f" ± {stats['std'] * scale:.{digits}f}"
    return text + suffix


def _table(headers, rows):
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _machine_line(machine):
    cpu = machine.get("cpu", {})
    loads = ", ".join(f"{x:.2f}" for x in machine.get("load_average_at_start", []))
    return (
        f"{cpu.get('model', '?')} ({cpu.get('cores', '?')} cores, "
        f"{_num(cpu.get('mhz'), 0)} MHz, {', '.join(cpu.get('flags', [])) or 'no SIMD flags'}"
        f"{', ' + cpu['hypervisor'] + ' guest' if cpu.get('hypervisor') else ''}), "
        f"{machine.get('memory_gib', '?')} GiB, Python {machine.get('python')}, "
        f"TensorFlow {machine.get('tensorflow')}, Keras {machine.get('keras')}, "
        f"commit {machine.get('git_commit') or '?'}, {machine.get('date')}, "
        f"load average at start {loads}"
    )


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# -------------------------------------------------------------- throughput
def _config_row(config):
    resolved = config.get("resolved", {})
    return [
        config.get("label", config["name"]),
        resolved.get("batch_size", "-"),
        resolved.get("precision", "-"),
        resolved.get("jit_compile", "-"),
        resolved.get("pipeline", "-"),
    ]


def _ratio_cell(part):
    return f"x{part['ratio']:.2f} ({part['ratio_min']:.2f}-{part['ratio_max']:.2f})"


def throughput_section(data, image_dir, image_prefix):
    if not data:
        return [
            "## Throughput",
            "",
            "Not run yet (`python benchmarks/run.py --only throughput`).",
            "",
        ]
    peak = data["peak"]
    out = ["## Throughput", ""]
    settings = data["settings"]
    out += [
        f"Each configuration is timed alternately with the tutorial's recipe in one process "
        f"(tutorial, candidate, tutorial, candidate, ...: {settings['repeats']} pairs), "
        f"training on {settings['train_images']:,} MNIST images per pass (one `fit` epoch) "
        f"and predicting {settings['infer_images']:,}. The ratio is candidate images/s over "
        f"tutorial images/s of the same pair: median, then (min-max) over the pairs. The "
        f"reference is the tutorial's Functional model with the same head, trained the "
        f"tutorial's way (`fit` on NumPy float64 arrays, batch 32, Adam, no XLA: Keras's "
        f"`jit_compile='auto'` is off on CPU). GFLOP/s = images/s x FLOPs per image counted "
        f"from the layers (below). Configuration (c) is assembled from `nin_layers.training`'s "
        f"own pieces (`build_model`, its optimizer and learning-rate schedule, "
        f"`nin_layers.data.make_tf_dataset`, `resolve_precision('auto')`); `train()` itself "
        f"(which also turns on TensorFlow's op determinism in float32 while it trains) runs "
        f"in the accuracy benchmark, so its end-to-end speed is the accuracy runs' (the "
        f"targets table shows both).",
        "",
    ]
    rows, skipped = [], []
    for config in data["configs"]:
        if "unavailable" in config:
            skipped.append(
                f"- {config.get('label', config['name'])}: not measured ({config['unavailable']})"
            )
            continue
        train, infer = config["train"], config["infer"]
        rows.append(
            _config_row(config)
            + [
                _num(train["candidate_median_ips"]),
                _ratio_cell(train),
                _num(infer["candidate_median_ips"]),
                _ratio_cell(infer),
                _num(train["candidate_gflops"], 1),
                _num(train["candidate_pct_peak"], 1, "%"),
                _num(infer["candidate_gflops"], 1),
            ]
        )
    out.append(
        _table(
            [
                "configuration",
                "batch",
                "precision",
                "XLA",
                "input",
                "train img/s",
                "train vs tutorial",
                "predict img/s",
                "predict vs tutorial",
                "train GFLOP/s",
                "train % of peak",
                "predict GFLOP/s",
            ],
            rows,
        )
    )
    out += [""] + skipped + ([""] if skipped else [])
    if rows:
        name = f"{image_prefix}throughput.png"
        _plot_throughput(data, image_dir / name)
        out += [f"![Throughput ratios and GFLOP/s]({IMAGE_DIR.as_posix()}/{name})", ""]
    out += ["### How far from the machine's limit", ""]
    out += [
        f"- Theoretical peak: **{peak['fp32_gflops']:.0f} GFLOP/s fp32**, "
        f"{peak['bf16_gflops']:.0f} GFLOP/s bf16. Assumption: {peak['assumption']}.",
        f"- Measured ceiling: a 1024x1024 matrix product reaches "
        f"**{peak['matmul_fp32_gflops']:.1f} GFLOP/s** in fp32 "
        f"({100 * peak['matmul_fp32_gflops'] / peak['fp32_gflops']:.0f}% of that peak) and "
        f"{peak['matmul_bf16_gflops']:.1f} GFLOP/s in bf16.",
    ]
    best = max(
        (c for c in data["configs"] if "train" in c),
        key=lambda c: c["train"]["candidate_gflops"],
        default=None,
    )
    if best:
        out.append(
            f"- Best training throughput: {best['label']}, "
            f"{best['train']['candidate_gflops']:.1f} GFLOP/s = "
            f"{best['train']['candidate_pct_peak']:.0f}% of the theoretical peak and "
            f"{best['train']['candidate_pct_matmul']:.0f}% of the measured matrix product."
        )
    out.append("")
    out += flops_table(data)
    return out


def flops_table(data):
    out = ["### FLOPs per image, counted from the layers", ""]
    flops = data["flops"]
    heads = sorted(flops)
    names = []
    per_head = {}
    for head in heads:
        per_head[head] = {row["layer"]: row for row in flops[head]["layers"]}
        for row in flops[head]["layers"]:
            if row["layer"] not in names:
                names.append(row["layer"])
    rows = []
    for name in names:
        cells = [name]
        for head in heads:
            row = per_head[head].get(name)
            cells.append(
                "-"
                if row is None
                else f"{row['type']} -> {'x'.join(map(str, row['output']))}: "
                f"{row['forward_flops']:,}"
            )
        rows.append(cells)
    rows.append(["**forward total**"] + [f"**{flops[h]['forward']:,}**" for h in heads])
    rows.append(["**training total**"] + [f"**{flops[h]['train']:,}**" for h in heads])
    out.append(_table(["layer"] + [f"{h} head" for h in heads], rows))
    out += [
        "",
        "Conv2D: 2 FLOPs per multiply-add + bias + activation; pooling: one per input "
        "element of each window. Training = forward + backward, the backward of a "
        "convolution costing twice its multiply-adds (input and kernel gradients; none for "
        "the input of the first layer) and that of element-wise work once. The optimizer "
        "update (about 10 FLOPs per parameter per step) and the head's own mean and softmax "
        "are left out (under 1%).",
        "",
    ]
    uncounted = sorted({n for h in heads for n in flops[h].get("uncounted", [])})
    if uncounted:
        out += [
            f"Layers with weights but no FLOP formula (not counted): {', '.join(uncounted)}.",
            "",
        ]
    return out


def _plot_throughput(data, path):
    plt = _plt()
    configs = [c for c in data["configs"] if "train" in c]
    labels = [c["name"] for c in configs]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 0.45 * len(configs) + 1.8))
    positions = range(len(configs))
    for offset, what, color in ((-0.2, "train", "tab:blue"), (0.2, "infer", "tab:orange")):
        values = [c[what]["ratio"] for c in configs]
        low = [c[what]["ratio"] - c[what]["ratio_min"] for c in configs]
        high = [c[what]["ratio_max"] - c[what]["ratio"] for c in configs]
        left.barh(
            [p + offset for p in positions],
            values,
            height=0.4,
            color=color,
            xerr=[low, high],
            label="training" if what == "train" else "prediction",
        )
    left.axvline(1.0, color="black", linewidth=1)
    left.axvline(
        SPEED_TARGET,
        color="tab:green",
        linestyle="--",
        linewidth=1,
        label=f"target for the default recipe (x{SPEED_TARGET:g})",
    )
    left.set_yticks(list(positions), labels)
    left.invert_yaxis()
    left.set_xlabel("images/s relative to the tutorial recipe (same pair)")
    left.legend(loc="lower right", fontsize=8)
    left.set_title("Speed-up over the tutorial recipe")
    gflops = [c["train"]["candidate_gflops"] for c in configs]
    right.barh(list(positions), gflops, color="tab:blue", height=0.6)
    peak = data["peak"]
    right.axvline(
        peak["fp32_gflops"],
        color="tab:red",
        linestyle="--",
        label=f"theoretical fp32 peak {peak['fp32_gflops']:.0f}",
    )
    right.axvline(
        peak["matmul_fp32_gflops"],
        color="tab:purple",
        linestyle=":",
        label=f"measured matmul {peak['matmul_fp32_gflops']:.0f}",
    )
    right.set_yticks(list(positions), [])
    right.invert_yaxis()
    right.set_xlabel("training GFLOP/s")
    right.legend(loc="lower right", fontsize=8)
    right.set_title("Achieved training GFLOP/s")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ---------------------------------------------------------------- accuracy
def accuracy_section(data, image_dir, image_prefix):
    if not data:
        return ["## Accuracy", "", "Not run yet (`python benchmarks/run.py --only accuracy`).", ""]
    settings = data["settings"]
    thresholds = [f"{t:.3f}" for t in data["thresholds"]]
    train_images = data["runs"][0]["train_images"] if data["runs"] else 0
    out = ["## Accuracy", ""]
    out += [
        f"{train_images:,} training images, {settings['epochs']} epoch(s), "
        f"{_seed_text(settings['seeds'])}, heads {', '.join(settings['heads'])}. "
        "The test set is evaluated at each epoch end "
        f"by a callback; its time is excluded from the wall time and shown apart. Wall time "
        f"is the `fit` call (including the first epoch's tracing) minus those evaluations. "
        f"Each recipe runs in its own process. Tutorial recipe: "
        f"`benchmarks/tutorial_reference.py`; package default: `nin_layers.training.train`.",
        "",
    ]
    rows = []
    for summary in data["summary"].values():
        time_cells = []
        for t in thresholds:
            item = summary["time_to"][t]
            total = len(summary["seeds"])
            cell = (
                "not reached" if not item["reached"] else (_mean_std(item, digits=1, suffix=" s"))
            )
            if item["reached"] and item["reached"] < total:
                cell += f" ({item['reached']}/{total} seeds)"
            time_cells.append(cell)
        rows.append(
            [
                RECIPE_NAMES.get(summary["recipe"], summary["recipe"]),
                summary["head"],
                _mean_std(summary["test_accuracy"], 100, 2, "%"),
                _mean_std(summary["wall_seconds"], digits=1, suffix=" s"),
                _mean_std(summary["images_per_second"], digits=0),
                *time_cells,
                _mean_std(summary["eval_seconds"], digits=1, suffix=" s"),
            ]
        )
    headers = ["recipe", "head", "test accuracy (mean ± std)", "wall time", "train img/s"]
    headers += [f"time to {float(t) * 100:.1f}%" for t in thresholds] + ["test evaluations"]
    out.append(_table(headers, rows))
    out.append("")
    if data["runs"]:
        name = f"{image_prefix}accuracy.png"
        _plot_accuracy(data, image_dir / name)
        out += [f"![Test accuracy against training time]({IMAGE_DIR.as_posix()}/{name})", ""]
    precisions = sorted({str(r.get("precision")) for r in data["runs"] if r["recipe"] == "default"})
    batches = sorted({str(r.get("batch_size")) for r in data["runs"] if r["recipe"] == "default"})
    how = sorted({r.get("how", "") for r in data["runs"] if r["recipe"] == "default"})
    if precisions:
        out += [
            f"The package default ran with batch size {', '.join(batches)} and precision "
            f"{', '.join(precisions)} ({'; '.join(how)}).",
            "",
        ]
    return out


def _speed_shortfall(ratio):
    """`**missed** by N% (xR of x3)`, with a decimal more when it is under 1%."""
    short = 100 * (1 - ratio / SPEED_TARGET)
    if short < 1:
        return f"**missed** by {short:.1f}% (x{ratio:.3f} of x{SPEED_TARGET:g})"
    return f"**missed** by {short:.0f}% (x{ratio:.2f} of x{SPEED_TARGET:g})"


def _seed_text(seeds):
    if isinstance(seeds, list):  # older results: the same seeds for both recipes
        seeds = {recipe: seeds for recipe in RECIPE_NAMES}
    text = ", ".join(
        f"{len(v)} seed(s) for the {RECIPE_NAMES.get(k, k)} ({', '.join(map(str, v))})"
        for k, v in seeds.items()
    )
    if min(len(v) for v in seeds.values()) < 3:
        text += (
            " (fewer than the issue's 3 seeds: `python benchmarks/run.py --seeds 3 "
            "--tutorial-seeds 3` runs the complete protocol)"
        )
    return text


def _plot_accuracy(data, path):
    plt = _plt()
    heads = data["settings"]["heads"]
    fig, axes = plt.subplots(1, len(heads), figsize=(6 * len(heads), 4.2), squeeze=False)
    colors = {"tutorial": "tab:gray", "default": "tab:blue"}
    for axis, head in zip(axes[0], heads, strict=True):
        for run in data["runs"]:
            if run["head"] != head:
                continue
            seconds = [0.0] + [e["train_seconds"] for e in run["epochs"]]
            accuracy = [None] + [100 * e["test_accuracy"] for e in run["epochs"]]
            axis.plot(
                seconds[1:],
                accuracy[1:],
                marker="o",
                markersize=3,
                linestyle=("-", "--", ":", "-.")[run["seed"] % 4],
                color=colors.get(run["recipe"], "black"),
                alpha=0.8,
                label=f"{RECIPE_NAMES.get(run['recipe'], run['recipe'])} (seed {run['seed']})",
            )
        target = data.get("targets", {}).get(head)
        goal = data.get("targets_goal", {}).get(head)
        if goal:
            axis.axhline(
                100 * goal,
                color="tab:green",
                linestyle="--",
                linewidth=1,
                label=f"tutorial's accuracy {100 * goal:.1f}%",
            )
        if target:
            axis.axvline(
                target["budget_seconds"],
                color="tab:red",
                linestyle=":",
                linewidth=1,
                label="1/3 of the tutorial's wall time",
            )
        axis.set_title(f"{head} head")
        axis.set_xlabel("training seconds (test evaluations excluded)")
        axis.set_ylabel("test accuracy (%)")
        values = [
            100 * e["test_accuracy"] for r in data["runs"] if r["head"] == head for e in r["epochs"]
        ] or [90.0]
        low = min(values)
        if goal and max(values) > 100 * goal - 2:
            low = max(low, 100 * goal - 2)  # zoom on the end that matters
        high = max(max(values), 100 * goal if goal else 0)
        pad = max(0.15, 0.04 * (high - low))
        axis.set_ylim(max(low - pad, 0), min(high + pad, 100))
        axis.set_xlim(left=0)
        axis.grid(alpha=0.3)
        handles, labels = axis.get_legend_handles_labels()
        unique = dict(zip(labels, handles, strict=True))
        axis.legend(unique.values(), unique.keys(), fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ------------------------------------------------------------------ tuners
def tuners_section(data, image_dir, image_prefix):
    if not data:
        return ["## Tuners", "", "Not run yet (`python benchmarks/run.py --only tuners`).", ""]
    settings = data["settings"]
    out = ["## Tuners", ""]
    out += [
        f"The width of the reshape head's 1x1 bottleneck (8 to 1024, powers of two), searched "
        f"by `nin_layers.tuning.search_bottleneck_width` on {settings['train']:,} training and "
        f"{settings['val']:,} validation images (batch {settings['batch_size']}), "
        f"{settings['max_trials']} trials x {settings['epochs']} epochs for grid, random and "
        f"Bayesian search; Hyperband with `max_epochs={settings['epochs']}` runs its own "
        f"schedule, so the epochs each tuner really trained are shown. The best trial's model "
        f"is evaluated on the test set. keras-tuner's Bayesian optimization starts with "
        f"random trials (3 per hyperparameter by default), so on a small budget it behaves "
        f"much like random search. Memory: resident memory after each trial of a search of "
        f"{settings['memory_trials']} tiny trials (64 random 16x16 images, a two-block "
        f"`AllConvNet`, widths 2 to 4096; Hyperband with `max_epochs=9` so that it has that "
        f"many trials), and the process's peak"
        + (
            " (each tuner in its own process)."
            if settings.get("isolate")
            else " (all tuners in one process, so peaks accumulate)."
        ),
        "",
    ]
    rows = []
    for item in data["tuners"]:
        profile = item["memory_profile"]
        rss = profile["rss_mib"]
        rows.append(
            [
                item["tuner"],
                item["trials"],
                item["epochs_trained"],
                _num(item["seconds"], 1, " s"),
                item["best_width"] or "-",
                _pct(item["best_val_accuracy"]),
                _pct(item["best_test_accuracy"]),
                f"{rss[0]:.0f} -> {rss[-1]:.0f} MiB ({profile['trials']} trials)",
                _num(item["peak_rss_mib"], 0, " MiB"),
            ]
        )
    out.append(
        _table(
            [
                "tuner",
                "trials",
                "epochs trained",
                "wall time",
                "best width",
                "best val accuracy",
                "its test accuracy",
                "memory over many trials",
                "peak memory",
            ],
            rows,
        )
    )
    out.append("")
    if data["tuners"]:
        name = f"{image_prefix}tuners.png"
        _plot_tuners(data, image_dir / name)
        out += [f"![Tuners: time, accuracy and memory]({IMAGE_DIR.as_posix()}/{name})", ""]
    return out


def _plot_tuners(data, path):
    plt = _plt()
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4))
    for item in data["tuners"]:
        color = TUNER_COLORS.get(item["tuner"], "black")
        if item["best_test_accuracy"] is not None:
            left.scatter(
                item["seconds"],
                100 * item["best_test_accuracy"],
                s=60,
                color=color,
                label=f"{item['tuner']} (width {item['best_width']})",
            )
        rss = item["memory_profile"]["rss_mib"]
        right.plot(
            range(1, len(rss) + 1), rss, marker="o", markersize=3, color=color, label=item["tuner"]
        )
    left.set_xlabel("search wall time (s)")
    left.set_ylabel("test accuracy of the best width (%)")
    left.set_title("Same budget: time and result")
    left.grid(alpha=0.3)
    left.legend(fontsize=8)
    right.xaxis.get_major_locator().set_params(integer=True)
    right.set_xlabel("trial")
    right.set_ylabel("resident memory after the trial (MiB)")
    right.set_title("Memory over many tiny trials")
    right.grid(alpha=0.3)
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ----------------------------------------------------------------- targets
def _by_name(throughput):
    return {c["name"]: c for c in (throughput or {}).get("configs", []) if "train" in c}


def targets(throughput, accuracy):
    """Rows `(target, measured, verdict)`; the verdict says by how much a miss is."""
    rows = []
    configs = _by_name(throughput)
    for head in ("reshape", "gap"):
        config = configs.get(f"default_{head}")
        if not config:
            rows.append(
                (
                    f"default recipe >= x{SPEED_TARGET:g} the tutorial's training "
                    f"images/s ({head})",
                    "not measured",
                    "unknown",
                )
            )
            continue
        ratio = config["train"]["ratio"]
        verdict = "**met**" if ratio >= SPEED_TARGET else _speed_shortfall(ratio)
        rows.append(
            (
                f"default recipe >= x{SPEED_TARGET:g} the tutorial's training images/s ({head})",
                f"x{ratio:.2f} ({config['train']['candidate_median_ips']:,.0f} vs "
                f"{config['train']['reference_median_ips']:,.0f} img/s)",
                verdict,
            )
        )
    summary = (accuracy or {}).get("summary") or {}
    for head in ("reshape", "gap"):
        ref, ours = summary.get(f"tutorial/{head}"), summary.get(f"default/{head}")
        if not ref or not ours:
            continue
        ratio = ours["images_per_second"]["mean"] / ref["images_per_second"]["mean"]
        verdict = "**met**" if ratio >= SPEED_TARGET else _speed_shortfall(ratio)
        rows.append(
            (
                f"the same, end to end in the accuracy runs ({head}; `train()` as shipped, "
                "separate processes, not interleaved)",
                f"x{ratio:.2f} ({ours['images_per_second']['mean']:,.0f} vs "
                f"{ref['images_per_second']['mean']:,.0f} img/s)",
                verdict,
            )
        )
    for head in ("reshape", "gap"):
        config = configs.get(f"allconvnet_{head}")
        if not config:
            continue
        for what, label in (("train", "training"), ("infer", "prediction")):
            ratio = config[what]["ratio"]
            cost = 1 / ratio - 1
            verdict = (
                "**met**"
                if cost <= OVERHEAD_LIMIT
                else (f"**missed** by {100 * (cost - OVERHEAD_LIMIT):.1f} points")
            )
            rows.append(
                (
                    f"AllConvNet costs at most {100 * OVERHEAD_LIMIT:.0f}% more than the "
                    f"tutorial's model, same recipe ({head}, {label})",
                    f"{100 * cost:+.1f}% time per image (x{ratio:.3f})",
                    verdict,
                )
            )
    for head, target in ((accuracy or {}).get("targets") or {}).items():
        goal = target["goal_accuracy"]
        time_to = target["default_time_to_goal_seconds"]
        budget = target["budget_seconds"]
        measured = (
            f"reached {100 * goal:.1f}% after {time_to:.1f} s "
            f"({time_to / target['tutorial_wall_seconds']:.2f} of the tutorial's "
            f"{target['tutorial_wall_seconds']:.1f} s)"
            if time_to is not None
            else f"{100 * goal:.1f}% not reached in every run "
            f"({target['default_runs_reaching_goal']} runs)"
        )
        if target["time_met"]:
            verdict = "**met**"
        elif time_to is None:
            verdict = (
                f"**missed**: final accuracy {100 * target['default_mean_accuracy']:.2f}% "
                f"(mean), {100 * (goal - target['default_mean_accuracy']):.2f} points "
                f"short"
                if target["default_mean_accuracy"] < goal
                else f"**missed**: only {target['default_runs_reaching_goal']} runs got there"
            )
        else:
            verdict = (
                f"**missed** by {time_to - budget:.1f} s "
                f"({100 * (time_to / budget - 1):.0f}% over the budget)"
            )
        rows.append(
            (
                f"default recipe reaches the tutorial's {100 * goal:.1f}% ({head}) in <= "
                f"1/3 of the tutorial's wall time ({budget:.1f} s)",
                measured,
                verdict,
            )
        )
        verdict = (
            "**met**"
            if target["accuracy_met"]
            else (f"**missed** by {100 * (goal - target['default_mean_accuracy']):.2f} points")
        )
        rows.append(
            (
                f"default recipe's final test accuracy >= {100 * goal:.1f}% ({head})",
                f"{100 * target['default_mean_accuracy']:.2f}% (tutorial recipe measured "
                f"here: {100 * target['tutorial_mean_accuracy']:.2f}%)",
                verdict,
            )
        )
    return rows


# ------------------------------------------------------------------- write
def build(results_dir=DEFAULT_RESULTS, docs_dir=DEFAULT_DOCS, image_prefix=""):
    """Writes `<docs_dir>/benchmarks.md` and its PNGs; returns the markdown path."""
    results_dir, docs_dir = Path(results_dir), Path(docs_dir)
    image_dir = docs_dir / IMAGE_DIR
    image_dir.mkdir(parents=True, exist_ok=True)
    throughput = read_json(results_dir / "throughput.json")
    accuracy = read_json(results_dir / "accuracy.json")
    if accuracy and accuracy.get("runs"):
        # Recomputed from the runs, so the page follows the current rules.
        from benchmarks.accuracy import summarize

        accuracy["summary"], accuracy["targets"] = summarize(accuracy["runs"], accuracy["settings"])
    tuners = read_json(results_dir / "tuners.json")
    parts = [p for p in (throughput, accuracy, tuners) if p]
    modes = sorted({p["mode"] for p in parts})
    lines = ["# Benchmarks", ""]
    lines += [
        "<!-- Generated by benchmarks/report.py from benchmarks/results/*.json; "
        "do not edit by hand. -->",
        "",
    ]
    if modes != ["full"]:
        lines += [
            f"> **These numbers come from a `{'/'.join(modes) or 'no'}` run**: tiny "
            "subsets and one epoch, so they only show that the scripts work. Run "
            "`python benchmarks/run.py` on a quiet machine for real numbers.",
            "",
        ]
    partial = [p["benchmark"] for p in parts if not p.get("complete")]
    if partial:
        lines += [
            f"> **Partial results** for {', '.join(partial)}: that benchmark was "
            "interrupted or is still running; `python benchmarks/run.py` finishes it.",
            "",
        ]
    if parts:
        machine = parts[0]["machine"]
        lines += [f"Machine: {_machine_line(machine)}.", ""]
        loads = [p["machine"].get("load_average_at_start", [0])[0] for p in parts]
        cores = machine.get("cpu", {}).get("cores") or 1
        if max(loads) > 0.5 * cores:
            lines += [
                f"> Warning: the 1-minute load average was up to {max(loads):.1f} on "
                f"{cores} cores when a benchmark started: other work was running, so the "
                "absolute timings are pessimistic (the A/B ratios less so).",
                "",
            ]
    lines += [
        "Regenerate everything with `python benchmarks/run.py` (resumes; `--fresh` to "
        "start over), only the page with `python benchmarks/report.py`.",
        "",
    ]
    lines += ["## Targets", ""]
    target_rows = targets(throughput, accuracy)
    lines += [
        _table(["target", "measured", "verdict"], target_rows)
        if target_rows
        else "No results yet.",
        "",
    ]
    lines += throughput_section(throughput, image_dir, image_prefix)
    lines += accuracy_section(accuracy, image_dir, image_prefix)
    lines += tuners_section(tuners, image_dir, image_prefix)
    path = docs_dir / "benchmarks.md"
    path.write_text("\n".join(lines).rstrip() + "\n")
    readme = [
        "Benchmark numbers for the README (from docs/benchmarks.md, "
        f"{'/'.join(modes) or 'no'} run):",
        "",
    ]
    readme += [_table(["target", "measured", "verdict"], target_rows), ""] if target_rows else []
    (results_dir / "readme_numbers.md").write_text("\n".join(readme) + "\n")
    log(f"report: wrote {path}")
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_RESULTS, help="results folder")
    parser.add_argument("--docs", type=Path, default=DEFAULT_DOCS, help="docs folder")
    args = parser.parse_args(argv)
    build(args.out, args.docs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
