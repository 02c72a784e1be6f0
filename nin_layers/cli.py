"""The `nin-layers` command line: `train`, `evaluate` and `tune`.

Each sub-command's arguments and behaviour live next to the code they drive
(`nin_layers.training` and `nin_layers.tuning`); this module only wires them
into one `argparse` parser.
"""

from __future__ import annotations

import argparse
import sys


def build_parser():
    """Returns the `nin-layers` argument parser with its sub-commands."""
    from nin_layers import __version__, training, tuning

    parser = argparse.ArgumentParser(
        prog="nin-layers",
        description="Train, evaluate and tune Network-in-Network classifiers "
        "(1x1 convolutions + global average pooling, no Dense layer).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    train = commands.add_parser("train", help="train an AllConvNet and save it with reports")
    training.add_train_arguments(train)
    train.set_defaults(handler=training.run_train_command)

    evaluate = commands.add_parser("evaluate", help="evaluate a saved .keras model")
    training.add_evaluate_arguments(evaluate)
    evaluate.set_defaults(handler=training.run_evaluate_command)

    tune = commands.add_parser("tune", help="search the width of the 1x1 bottleneck")
    tuning.add_tune_arguments(tune)
    tune.set_defaults(handler=tuning.run_tune_command)
    return parser


def main(argv=None):
    """Entry point of `nin-layers` and `python -m nin_layers`; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        print(
            "\nInterrupted. Run the same command again to resume where it stopped.",
            file=sys.stderr,
        )
        return 130
    except (ValueError, FileNotFoundError) as error:
        print(f"nin-layers {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
