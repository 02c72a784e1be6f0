"""Shared helpers of the benchmark scripts: machine info, JSON, data, timing."""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_RESULTS = REPO / "benchmarks" / "results"
DEFAULT_DOCS = REPO / "docs"
DEFAULT_DATA = Path("/work/shared/data/mnist.npz")

# The three sizes of every benchmark; `smoke` is for the test suite.
MODES = ("smoke", "quick", "full")


def log(message):
    """Prints one progress line with the wall clock, flushed at once."""
    stamp = datetime.datetime.now().strftime("%H:%M:%S")
    print(f"[{stamp}] {message}", flush=True)


def cpu_info():
    """CPU model, cores, clock and the SIMD flags that matter for the peak."""
    info = {"model": platform.processor() or platform.machine(), "mhz": None, "flags": []}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "model name" and info["model"] in ("", platform.machine()):
            info["model"] = value
        elif key == "cpu MHz" and info["mhz"] is None:
            info["mhz"] = float(value)
        elif key == "cpu family" and "family" not in info:
            info["family"] = int(value)
        elif key == "model" and "model_number" not in info:
            info["model_number"] = int(value)
        elif key == "vendor_id" and "vendor" not in info:
            info["vendor"] = value
        elif key == "flags" and not info["flags"]:
            wanted = ("avx", "fma", "amx", "f16c")
            info["flags"] = sorted(f for f in value.split() if f.startswith(wanted))
    info["cores"] = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    info["cores"] = info["cores"] or os.cpu_count()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "Hypervisor vendor":
                info["hypervisor"] = value.strip()
            elif key.strip() == "CPU max MHz":
                info["max_mhz"] = float(value)
    except (OSError, subprocess.SubprocessError, ValueError):
        pass
    return info


def git_commit():
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def machine_info():
    """What every results file records about where and when it was made."""
    import keras
    import tensorflow as tf

    return {
        "cpu": cpu_info(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "platform": platform.platform(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "load_average_at_start": list(os.getloadavg()),
    }


def write_json(path, data):
    """Writes `data` to `path` atomically (a crash never leaves half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


def read_json(path):
    """Returns the JSON in `path`, or `None` if it is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def memory_mib():
    """(current RSS, peak RSS) of this process in MiB, from /proc/self/status."""
    current = peak = None
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                current = int(line.split()[1]) / 1024
            elif line.startswith("VmHWM:"):
                peak = int(line.split()[1]) / 1024
    except OSError:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return current, peak


class Stopwatch:
    """`with Stopwatch() as t: ...` then `t.seconds`."""

    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start
        return False


def set_seed(seed):
    import keras

    keras.utils.set_random_seed(int(seed))


def quiet_tensorflow():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def add_common_arguments(parser):
    """`--quick/--smoke`, `--out`, `--data`, `--fresh` for every script."""
    size = parser.add_mutually_exclusive_group()
    size.add_argument(
        "--quick", action="store_true", help="tiny subsets, 1 epoch: a smoke check (~2 min)"
    )
    size.add_argument(
        "--smoke", action="store_true", help="even smaller than --quick (for the test suite)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_RESULTS,
        help=f"folder of the JSON results (default: {DEFAULT_RESULTS.relative_to(REPO)})",
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=DEFAULT_DATA,
        help=f"MNIST .npz in keras layout (default: {DEFAULT_DATA})",
    )
    parser.add_argument(
        "--docs",
        type=Path,
        default=None,
        help="folder for benchmarks.md and img/ (default: docs/ when the results go to "
        "benchmarks/results, else OUT/docs)",
    )
    parser.add_argument(
        "--fresh", action="store_true", help="ignore finished results and measure again"
    )
    return parser


def resolve_paths(args):
    """`(mode, results folder, docs folder)` of parsed common arguments.

    `--quick` and `--smoke` without `--out` write to a temporary folder, so
    they never overwrite the published results; the page goes to `docs/`
    only for results in `benchmarks/results`.
    """
    mode = mode_of(args)
    out = args.out
    if mode != "full" and out == DEFAULT_RESULTS:
        out = Path(tempfile.gettempdir()) / f"nin-layers-benchmarks-{mode}"
    docs = args.docs or (DEFAULT_DOCS if out == DEFAULT_RESULTS else out / "docs")
    return mode, out, docs


def mode_of(args):
    return "smoke" if args.smoke else "quick" if args.quick else "full"
