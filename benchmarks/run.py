"""Runs the benchmarks and regenerates `docs/benchmarks.md`.

    python benchmarks/run.py                 # the full set: about 40 minutes on 2 cores with AMX
    python benchmarks/run.py --quick         # a smoke check: about 1 minute (68 s measured)
    python benchmarks/run.py --only accuracy --data /path/to/mnist.npz

The full set runs throughput (~9 min), tuners (~3 min) and accuracy (~25 min:
10 epochs on full MNIST, 3 seeds of each recipe per head as the issue asks,
seed 0 of everything first), in that order; measured on 2 cores with AMX
(bfloat16). On an earlier AVX2-only machine (no bfloat16 hardware, so float32)
one 10-epoch run took about 11 minutes for either recipe, and the 12 runs
would take over 2 hours. `--seeds N --tutorial-seeds N` change the number of
seeds.

The full set writes `benchmarks/results/*.json` and `docs/benchmarks.md` (+ PNGs
in `docs/img/benchmarks/`). `--quick` and `--smoke` write to a temporary
folder instead (printed at the start), so they never overwrite the
published results; `--out DIR` puts the JSON in DIR and, unless `--docs` is
given, the page in DIR/docs. Every benchmark saves its results as it goes;
running the same command again skips what is finished (`--fresh` redoes it),
and `python benchmarks/report.py` renders the page from whatever is there.
Run it on a quiet machine: other work on the CPU slows the timings.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.accuracy import add_seed_arguments
from benchmarks.common import add_common_arguments, log, quiet_tensorflow, resolve_paths

# Tuners before accuracy: if a run is cut short, what is lost is the second
# seed of the accuracy runs (they go seed by seed), not a whole benchmark.
PARTS = ("throughput", "tuners", "accuracy")


def _parts(text):
    parts = [p.strip() for p in text.split(",") if p.strip()]
    unknown = [p for p in parts if p not in PARTS]
    if unknown or not parts:
        raise argparse.ArgumentTypeError(
            f"expected a comma-separated list of {', '.join(PARTS)}; received {text!r}"
        )
    return parts


def main(argv=None):
    parser = add_common_arguments(
        argparse.ArgumentParser(
            description=__doc__.splitlines()[0],
            formatter_class=argparse.RawDescriptionHelpFormatter,
            epilog=__doc__.split("\n", 2)[2],
        )
    )
    parser.add_argument(
        "--only",
        type=_parts,
        default=list(PARTS),
        help=f"comma-separated benchmarks to run (default: {','.join(PARTS)})",
    )
    add_seed_arguments(parser)
    args = parser.parse_args(argv)
    mode, out, docs = resolve_paths(args)
    if not args.data.exists():
        parser.error(f"no MNIST file at {args.data} (pass --data PATH to a keras-layout .npz)")
    quiet_tensorflow()
    log(f"benchmarks ({mode}): {', '.join(args.only)}; results in {out}, page in {docs}")
    started = time.perf_counter()
    from benchmarks import report

    for part in args.only:
        module = __import__(f"benchmarks.{part}", fromlist=["run"])
        part_start = time.perf_counter()
        if part == "accuracy":
            module.run(out, args.data, mode, args.fresh, args.seeds, args.tutorial_seeds)
        else:
            module.run(out, args.data, mode, args.fresh)
        log(f"{part}: {time.perf_counter() - part_start:.0f} s")
        report.build(out, docs)
    log(
        f"benchmarks ({mode}): all done in {time.perf_counter() - started:.0f} s; "
        f"page: {docs / 'benchmarks.md'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
