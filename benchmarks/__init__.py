"""Benchmarks of nin-layers against the tutorial's recipe.

Run them all with `python benchmarks/run.py` (see `benchmarks/run.py --help`);
each script also runs on its own. Results go to `benchmarks/results/*.json`
and `benchmarks/report.py` turns them into `docs/benchmarks.md`.
"""
