"""Tests of nin_layers.data: every source, every bad input, the tf.data pipeline."""

import os
import time

import numpy as np
import pytest

from nin_layers import data as data_module
from nin_layers.data import Dataset, can_reach, load_dataset, make_tf_dataset


def write_npz(path, **overrides):
    """A tiny keras-layout .npz: 30 train / 12 test 28x28 uint8 images, 3 classes."""
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.integers(0, 256, (30, 28, 28), dtype=np.uint8),
        "y_train": np.arange(30) % 3,
        "x_test": rng.integers(0, 256, (12, 28, 28), dtype=np.uint8),
        "y_test": np.arange(12) % 3,
    }
    for key, value in overrides.items():
        if value is None:
            arrays.pop(key)
        else:
            arrays[key] = value
    np.savez(path, **arrays)
    return str(path)


def write_image_folder(root, classes, per_class=4, size=(12, 10), mode="L"):
    from PIL import Image

    rng = np.random.default_rng(1)
    for name in classes:
        folder = os.path.join(root, name)
        os.makedirs(folder, exist_ok=True)
        for index in range(per_class):
            shape = size if mode == "L" else (*size, 3)
            pixels = rng.integers(0, 256, shape, dtype=np.uint8)
            Image.fromarray(pixels, mode=mode).save(os.path.join(folder, f"{index}.png"))
    return str(root)


# ------------------------------------------------------------------ good data
def test_npz_is_loaded_as_float_images_in_unit_range(tmp_path):
    path = write_npz(tmp_path / "tiny.npz")
    data = load_dataset(path)
    assert isinstance(data, Dataset)
    assert data.x_train.shape == (30, 28, 28, 1)
    assert data.x_test.shape == (12, 28, 28, 1)
    assert data.x_train.dtype == np.float32
    assert 0.0 <= data.x_train.min() and data.x_train.max() <= 1.0
    raw = np.load(path)["x_train"]
    np.testing.assert_allclose(data.x_train[..., 0], raw / 255.0, rtol=1e-6)
    assert data.num_classes == 3
    assert data.input_shape == (28, 28, 1)
    assert data.name == "tiny"
    assert data.x_val is None and data.y_val is None
    assert data.y_train.dtype == np.int32


def test_float_pixels_in_0_255_are_rescaled(tmp_path):
    x = np.full((30, 8, 8, 3), 255.0, dtype="float64")
    path = write_npz(tmp_path / "f.npz", x_train=x, x_test=np.zeros((12, 8, 8, 3)))
    data = load_dataset(path)
    assert data.input_shape == (8, 8, 3)
    assert data.x_train.max() == pytest.approx(1.0)


def test_validation_split_and_limit_are_seeded_and_stratified(tmp_path):
    path = write_npz(tmp_path / "tiny.npz")
    data = load_dataset(path, validation_split=0.2, seed=3)
    assert len(data.x_val) == 6 and len(data.x_train) == 24
    assert np.bincount(data.y_val).tolist() == [2, 2, 2]
    again = load_dataset(path, validation_split=0.2, seed=3)
    np.testing.assert_array_equal(data.x_val, again.x_val)
    other = load_dataset(path, validation_split=0.2, seed=4)
    assert not np.array_equal(data.x_val, other.x_val)
    limited = load_dataset(path, limit=10)
    assert len(limited.x_train) == 10 and len(limited.x_test) == 12


def test_digits_is_a_different_input_size():
    data = load_dataset("digits")
    assert data.input_shape == (8, 8, 1)
    assert data.num_classes == 10
    assert len(data.x_train) + len(data.x_test) == 1797
    assert data.x_train.max() <= 1.0


def test_mnist_sample_is_a_reproducible_stratified_split():
    data = load_dataset("mnist_sample")
    assert data.x_train.shape == (4000, 28, 28, 1)
    assert data.x_test.shape == (1000, 28, 28, 1)
    assert np.bincount(data.y_test).tolist() == [100] * 10
    assert data.x_train.max() == pytest.approx(1.0)
    again = load_dataset("mnist_sample", seed=7)
    np.testing.assert_array_equal(data.y_test, again.y_test)


def test_image_folder_infers_classes_size_and_colour(tmp_path):
    root = write_image_folder(tmp_path / "shapes", ["circle", "square", "star"], per_class=5)
    data = load_dataset(root)
    assert data.class_names == ["circle", "square", "star"]
    assert data.input_shape == (12, 10, 1)
    assert data.num_classes == 3
    assert len(data.x_train) + len(data.x_test) == 15
    assert sorted(set(data.y_test.tolist())) == [0, 1, 2]


def test_image_folder_with_train_and_test_subfolders(tmp_path):
    write_image_folder(tmp_path / "d" / "train", ["a", "b"], per_class=3, mode="RGB")
    write_image_folder(tmp_path / "d" / "test", ["a", "b"], per_class=2, mode="RGB")
    data = load_dataset(str(tmp_path / "d"))
    assert len(data.x_train) == 6 and len(data.x_test) == 4
    assert data.input_shape == (12, 10, 3)


# --------------------------------------------------------- network fallback
def test_mnist_without_network_falls_back_fast_with_one_warning(monkeypatch, capsys):
    monkeypatch.setattr(data_module, "_is_cached", lambda key: False)
    monkeypatch.setattr(data_module, "can_reach", lambda url, timeout: False)
    start = time.perf_counter()
    data = load_dataset("mnist")
    assert time.perf_counter() - start < 30
    assert data.name == "mnist_sample"
    assert len(data.x_train) == 4000
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1
    assert lines[0].startswith("WARNING: could not download MNIST")
    assert "--dataset /path/to/mnist.npz" in lines[0]


def test_other_keras_datasets_without_network_raise_a_clear_error(monkeypatch):
    monkeypatch.setattr(data_module, "_is_cached", lambda key: False)
    monkeypatch.setattr(data_module, "can_reach", lambda url, timeout: False)
    with pytest.raises(ValueError, match="Could not download 'cifar10'.*local copy"):
        load_dataset("cifar10")


def test_failed_download_falls_back_too(monkeypatch, capsys):
    import keras

    def broken():
        raise Exception("URL fetch failure on https://x: None -- timed out")

    monkeypatch.setattr(data_module, "_is_cached", lambda key: False)
    monkeypatch.setattr(data_module, "can_reach", lambda url, timeout: True)
    monkeypatch.setattr(keras.datasets.mnist, "load_data", broken)
    data = load_dataset("mnist")
    assert data.name == "mnist_sample"
    assert "download failed: URL fetch failure" in capsys.readouterr().err


def test_can_reach_never_hangs():
    start = time.perf_counter()
    assert can_reach("http://127.0.0.1:1/", timeout=1.0) is False
    # A non-routable address (or a proxy that swallows the connection).
    assert can_reach("https://10.255.255.1/mnist.npz", timeout=1.0) is False
    assert time.perf_counter() - start < 4


# ---------------------------------------------------------------- bad data
@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"y_test": None}, r"missing key\(s\) y_test"),
        ({"x_train": np.zeros((30, 784), np.uint8)}, r"x_train has shape \(30, 784\)"),
        ({"x_train": np.full((30, 4, 4), "a")}, r"x_train has dtype <U1"),
        ({"x_train": np.zeros((0, 28, 28), np.uint8), "y_train": np.zeros(0, int)}, "is empty"),
        (
            {"x_test": np.full((12, 28, 28), np.nan, "float32")},
            r"x_test contains 9408 NaN or infinite",
        ),
        ({"y_train": np.arange(29) % 3}, "x_train has 30 images but y_train has 29 labels"),
        ({"y_test": np.arange(12) % 4}, r"y_test has 3 label\(s\) outside \[0, 3\)"),
        ({"y_train": np.arange(30) % 3 - 1}, r"y_train has 10 label\(s\) outside \[0, 2\)"),
        ({"y_train": np.zeros(30, int), "y_test": np.zeros(12, int)}, "a single class"),
        ({"y_train": np.eye(3)[np.arange(30) % 3]}, "one-hot labels"),
        ({"y_train": np.full(30, 0.5)}, "non-integer values"),
        ({"x_test": np.zeros((12, 14, 14), np.uint8)}, "test images .*must match"),
        ({"x_train": -np.ones((30, 28, 28))}, r"pixel values in \[-1, -1\]"),
        ({"x_train": np.full((30, 28, 28), 300, np.int32)}, r"pixel values in \[300, 300\]"),
    ],
)
def test_bad_npz_raises_value_error_naming_file_and_problem(tmp_path, overrides, message):
    path = write_npz(tmp_path / "bad.npz", **overrides)
    with pytest.raises(ValueError, match=message) as info:
        load_dataset(path)
    assert str(info.value).startswith(path)


def test_labels_outside_given_num_classes(tmp_path):
    path = write_npz(tmp_path / "tiny.npz")
    with pytest.raises(ValueError, match=r"y_train has 10 label\(s\) outside \[0, 2\)"):
        load_dataset(path, num_classes=2)


def test_file_that_is_not_an_npz(tmp_path):
    path = tmp_path / "junk.npz"
    path.write_bytes(b"this is not a zip file")
    with pytest.raises(ValueError, match="junk.npz: not a readable .npz file"):
        load_dataset(str(path))


def test_missing_path_and_unknown_name():
    with pytest.raises(FileNotFoundError, match="nowhere.npz"):
        load_dataset("/no/such/nowhere.npz")
    with pytest.raises(ValueError, match="expected one of 'mnist'.*Received: name_or_path='mnsit'"):
        load_dataset("mnsit")
    with pytest.raises(ValueError, match="expected a dataset name or a path. Received: name_or_"):
        load_dataset(42)


def test_folder_with_one_class(tmp_path):
    root = write_image_folder(tmp_path / "one", ["cats"])
    with pytest.raises(ValueError, match="one: only one class folder \\(cats\\)"):
        load_dataset(root)


def test_folder_without_class_folders_or_images(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty: no class sub-folders"):
        load_dataset(str(tmp_path / "empty"))
    root = write_image_folder(tmp_path / "some", ["a", "b"])
    os.makedirs(os.path.join(root, "c"))
    with pytest.raises(ValueError, match="class folder\\(s\\) c hold no images"):
        load_dataset(root)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"validation_split": 1.0}, "validation_split"),
        ({"limit": 0}, "limit"),
        ({"num_classes": 1}, "num_classes"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, message):
    path = write_npz(tmp_path / "tiny.npz")
    with pytest.raises(ValueError, match=f"Received an invalid value for argument `{message}`"):
        load_dataset(path, **kwargs)


# ---------------------------------------------------------------- tf.data
def labels_of(dataset):
    return np.concatenate([labels.numpy() for _, labels in dataset])


def test_pipeline_without_shuffle_keeps_order_and_batches():
    x = np.arange(10, dtype="float32").reshape(10, 1, 1, 1)
    y = np.arange(10)
    dataset = make_tf_dataset(x, y, 4)
    assert [int(b.shape[0]) for _, b in dataset] == [4, 4, 2]
    assert labels_of(dataset).tolist() == list(range(10))
    images = np.concatenate([images.numpy() for images, _ in dataset])
    np.testing.assert_array_equal(images[:, 0, 0, 0], np.arange(10))


def test_shuffle_order_depends_only_on_seed_and_epoch():
    import tensorflow as tf

    x = np.arange(50, dtype="float32").reshape(50, 1, 1, 1)
    y = np.arange(50)
    epoch = tf.Variable(0, dtype=tf.int64)
    dataset = make_tf_dataset(x, y, 8, shuffle=True, seed=5, epoch=epoch)
    assert int(dataset.cardinality()) == 7
    first = labels_of(dataset)
    assert sorted(first.tolist()) == list(range(50))
    assert first.tolist() != list(range(50))
    epoch.assign(1)
    second = labels_of(dataset)
    assert second.tolist() != first.tolist()
    # A fresh pipeline (a resumed process) at epoch 1 gives the same order.
    fresh = make_tf_dataset(x, y, 8, shuffle=True, seed=5, epoch=tf.Variable(1, dtype=tf.int64))
    assert labels_of(fresh).tolist() == second.tolist()
    # Images stay paired with their labels.
    for images, labels in dataset.take(2):
        np.testing.assert_array_equal(images.numpy()[:, 0, 0, 0], labels.numpy())


def test_pipeline_rejects_bad_batch_size_and_lengths():
    with pytest.raises(ValueError, match="argument `batch_size`"):
        make_tf_dataset(np.zeros((4, 2)), np.zeros(4), 0)
    with pytest.raises(ValueError, match="same length"):
        make_tf_dataset(np.zeros((4, 2)), np.zeros(3), 2)


def one_bright_pixel_images(count, size=7):
    """`count` images, each black but for one pixel in the centre worth its index + 1."""
    x = np.zeros((count, size, size, 1), dtype="uint8")
    x[:, size // 2, size // 2, 0] = np.arange(1, count + 1)
    return x


def pixel_moves(dataset, size=7):
    """{label: (row shift, column shift)} of one pass over the pipeline."""
    moves = {}
    for images, labels in dataset:
        for image, label in zip(images.numpy(), labels.numpy(), strict=True):
            ((row, column),) = np.argwhere(image[..., 0])
            assert image[row, column, 0] == label + 1  # the image kept its label
            moves[int(label)] = (int(row) - size // 2, int(column) - size // 2)
    return moves


def test_random_shift_moves_images_within_range_and_is_replayable():
    import tensorflow as tf

    x = one_bright_pixel_images(60)
    y = np.arange(60)
    epoch = tf.Variable(0, dtype=tf.int64)
    dataset = make_tf_dataset(x, y, 16, shuffle=True, seed=3, epoch=epoch, random_shift=2)
    first = pixel_moves(dataset)
    assert sorted(first) == list(range(60))
    shifts = np.array(list(first.values()))
    assert shifts.min() == -2 and shifts.max() == 2  # the whole range is used...
    assert len(set(map(tuple, shifts))) > 10  # ...in both directions
    assert pixel_moves(dataset) == first  # same epoch, same shifts
    epoch.assign(1)
    second = pixel_moves(dataset)
    assert second != first
    # A new pipeline (a resumed run) at epoch 1 shifts the same way.
    fresh = make_tf_dataset(
        x, y, 16, shuffle=True, seed=3, epoch=tf.Variable(1, dtype=tf.int64), random_shift=2
    )
    assert pixel_moves(fresh) == second


def test_random_shift_fills_with_zeros_and_keeps_shape_for_rank_3_images():
    x = np.ones((8, 5, 5), dtype="float32")
    dataset = make_tf_dataset(x, np.arange(8), 8, shuffle=True, seed=0, random_shift=1)
    images = next(iter(dataset))[0].numpy()
    assert images.shape == (8, 5, 5)
    assert set(np.unique(images)) <= {0.0, 1.0}
    # Every image keeps a 4x4 block of ones; a moved one loses a row or column.
    assert (images.sum(axis=(1, 2)) >= 16).all()
    assert (images.sum(axis=(1, 2)) < 25).any()


def test_pipeline_rejects_bad_random_shift():
    x = np.zeros((4, 5, 5, 1))
    for value in (-1, 1.5, True):
        with pytest.raises(ValueError, match=r"argument `random_shift`.*Received: random_shift="):
            make_tf_dataset(x, np.zeros(4), 2, shuffle=True, random_shift=value)
    with pytest.raises(ValueError, match=r"shuffle=False"):
        make_tf_dataset(x, np.zeros(4), 2, random_shift=1)
    with pytest.raises(ValueError, match=r"x.shape=\(4, 25\)"):
        make_tf_dataset(np.zeros((4, 25)), np.zeros(4), 2, shuffle=True, random_shift=1)


def test_training_pipeline_turns_tf_data_autotuning_off():
    # On 2 cores the autotuner made whole epochs 25-45% slower at random.
    dataset = make_tf_dataset(np.zeros((8, 4, 4, 1)), np.arange(8), 4, shuffle=True)
    assert dataset.options().autotune.enabled is False
