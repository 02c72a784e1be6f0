"""Reports of a training run: history files, metrics and PNG figures.

Every file is written atomically (to a temporary name in the same folder,
then renamed), so an interrupted run never leaves a half-written report.
Figures use matplotlib's non-interactive Agg backend.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os

import numpy as np


@contextlib.contextmanager
def atomic_output(path):
    """Yields a temporary path next to `path`; renames it to `path` on success.

    The temporary name keeps `path`'s extension (Keras checks it when
    saving `.keras` files). On an exception the temporary file is removed
    and `path` is left as it was.

    Example:

    >>> import os, tempfile
    >>> from nin_layers.reports import atomic_output
    >>> target = os.path.join(tempfile.mkdtemp(), "notes.txt")
    >>> with atomic_output(target) as tmp:
    ...     _ = open(tmp, "w").write("done")
    >>> open(target).read()
    'done'
    """
    path = os.fspath(path)
    folder, name = os.path.split(path)
    tmp = os.path.join(folder, f".tmp-{os.getpid()}-{name}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json(data, path):
    """Writes `data` as indented JSON to `path`, atomically."""
    with atomic_output(path) as tmp, open(tmp, "w") as file:
        json.dump(data, file, indent=2)
        file.write("\n")


def write_history(history, folder):
    """Writes a Keras history dict as `history.csv` and `history.json`.

    Args:
        history: dict mapping a metric name (e.g. `"loss"`) to a list with one
            value per epoch.
        folder: the output folder.

    Returns:
        The two paths written.
    """
    keys = list(history)
    epochs = max((len(v) for v in history.values()), default=0)
    csv_path = os.path.join(folder, "history.csv")
    with atomic_output(csv_path) as tmp, open(tmp, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["epoch", *keys])
        for epoch in range(epochs):
            row = [history[k][epoch] if epoch < len(history[k]) else "" for k in keys]
            writer.writerow([epoch + 1, *row])
    json_path = os.path.join(folder, "history.json")
    write_json({k: [float(v) for v in values] for k, values in history.items()}, json_path)
    return csv_path, json_path


def confusion_matrix(y_true, y_pred, num_classes):
    """Counts `(true, predicted)` pairs: an int array `(num_classes, num_classes)`.

    Example:

    >>> from nin_layers.reports import confusion_matrix
    >>> confusion_matrix([0, 1, 1], [0, 1, 0], 2).tolist()
    [[1, 0], [1, 1]]
    """
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(y_true), np.asarray(y_pred)), 1)
    return matrix


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(figure, path):
    plt = _pyplot()
    with atomic_output(path) as tmp:
        figure.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(figure)
    return path


def plot_training_curves(history, path, title=None):
    """Plots loss and accuracy per epoch (training and validation) to a PNG.

    Args:
        history: dict of per-epoch lists, as `keras.callbacks.History.history`.
        path: the PNG file to write.
        title: optional figure title.

    Returns:
        `path`.
    """
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for axis, metric, label in ((axes[0], "loss", "loss"), (axes[1], "accuracy", "accuracy")):
        for prefix, style in (("", "o-"), ("val_", "s--")):
            values = history.get(prefix + metric)
            if values:
                epochs = np.arange(1, len(values) + 1)
                name = "validation" if prefix else "training"
                axis.plot(epochs, values, style, label=name)
        axis.set_xlabel("epoch")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend()
    axes[0].set_title("loss")
    axes[1].set_title("accuracy")
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return _save(figure, path)


def plot_confusion_matrix(matrix, class_names, path, title=None):
    """Plots a confusion matrix (rows: true class, columns: predicted) to a PNG.

    Each cell shows its count; the colour is the fraction of the row.

    Returns:
        `path`.
    """
    plt = _pyplot()
    matrix = np.asarray(matrix)
    count = len(matrix)
    size = max(4.5, 0.55 * count + 2)
    figure, axis = plt.subplots(figsize=(size, size))
    totals = matrix.sum(axis=1, keepdims=True)
    fractions = matrix / np.maximum(totals, 1)
    axis.imshow(fractions, cmap="Blues", vmin=0, vmax=1)
    if count <= 30:
        for i in range(count):
            for j in range(count):
                if matrix[i, j]:
                    colour = "white" if fractions[i, j] > 0.5 else "black"
                    axis.text(
                        j, i, str(matrix[i, j]), ha="center", va="center",
                        color=colour, fontsize=8,
                    )  # fmt: skip
    ticks = np.arange(count)
    axis.set_xticks(ticks)
    axis.set_yticks(ticks)
    axis.set_xticklabels(class_names, rotation=45 if count > 10 else 0, ha="right")
    axis.set_yticklabels(class_names)
    axis.set_xlabel("predicted class")
    axis.set_ylabel("true class")
    accuracy = np.trace(matrix) / max(matrix.sum(), 1)
    axis.set_title(title or f"confusion matrix (accuracy {accuracy:.2%})")
    figure.tight_layout()
    return _save(figure, path)


def plot_class_activation_maps(maps, images, labels, probabilities, class_names, path):
    """Plots test images with the class activation map of their predicted class.

    Args:
        maps: array `(n, h, w, num_classes)`, class activation maps
            (`AllConvNet.class_activation_maps`).
        images: array `(n, H, W, C)` in [0, 1].
        labels: array `(n,)` of true classes.
        probabilities: array `(n, num_classes)` of predicted probabilities.
        class_names: list of str.
        path: the PNG file to write.

    Returns:
        `path`.
    """
    plt = _pyplot()
    maps, images = np.asarray(maps, dtype="float32"), np.asarray(images)
    count = len(images)
    columns = min(count, 6)
    rows = -(-count // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(2.1 * columns, 2.7 * rows), squeeze=False)
    height, width = images.shape[1:3]
    for index, axis in enumerate(axes.flat):
        axis.axis("off")
        if index >= count:
            continue
        image = images[index]
        image = image[..., 0] if image.shape[-1] == 1 else image
        predicted = int(np.argmax(probabilities[index]))
        cam = maps[index, ..., predicted]
        axis.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=1)
        axis.imshow(
            cam,
            cmap="jet",
            alpha=0.45,
            interpolation="bilinear",
            extent=(-0.5, width - 0.5, height - 0.5, -0.5),
        )
        correct = predicted == int(labels[index])
        axis.set_title(
            f"pred {class_names[predicted]} ({probabilities[index][predicted]:.0%})\n"
            f"true {class_names[int(labels[index])]}",
            fontsize=9,
            color="black" if correct else "red",
        )
    figure.suptitle("class activation maps of the predicted class (red: wrong)", fontsize=10)
    figure.tight_layout()
    return _save(figure, path)
