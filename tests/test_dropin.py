"""The head as a new user would drop it in: on a keras.applications backbone
and in a Sequential model; train a step, save, reload in a fresh process."""

import keras
import numpy as np
from testing import assert_same_predictions_in_fresh_process, to_numpy

from nin_layers import PointwiseClassifierHead


def _predict(model, images):
    """Inference-mode predictions (an eager call: no tracing to wait for)."""
    return to_numpy(model(images, training=False))


def _train_one_step(model, images, labels, **compile_kwargs):
    """Compiles and fits one batch; checks that the head's weights moved."""
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", **compile_kwargs)
    before = [to_numpy(w).copy() for w in model.trainable_weights]
    history = model.fit(images, labels, batch_size=len(images), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    changed = [
        not np.array_equal(b, to_numpy(w))
        for b, w in zip(before, model.trainable_weights, strict=True)
    ]
    assert all(changed[-4:]), "the head's weights did not move"
    return history.history["loss"][0]


def test_mobilenet_v2_and_sequential_reload_in_fresh_process(tmp_path):
    rng = np.random.default_rng(0)

    # 1. On a MobileNetV2 feature extractor, of unknown input size.
    backbone = keras.applications.MobileNetV2(
        input_shape=(None, None, 3), alpha=0.35, include_top=False, weights=None
    )
    inputs = keras.Input((None, None, 3))
    features = backbone(inputs)
    head = PointwiseClassifierHead(5, mode="reshape", bottleneck_width=32, dropout_rate=0.2)
    mobilenet = keras.Model(inputs, head(features), name="mobilenet_nin")
    assert mobilenet.output_shape == (None, 5)
    channels = backbone.output_shape[-1]
    assert head.count_params() == channels * 32 + 32 + 32 * 5 + 5

    images = rng.random((8, 32, 32, 3)).astype("float32")
    # Eagerly: tracing a training step through MobileNetV2's 150 layers takes
    # longer on a CPU than the step itself; graph-mode training of the head
    # is covered by the Sequential model below and by test_heads/test_models.
    _train_one_step(mobilenet, images, np.arange(8) % 5, run_eagerly=True)
    larger = rng.random((2, 64, 64, 3)).astype("float32")
    assert _predict(mobilenet, larger).shape == (2, 5)
    np.testing.assert_allclose(_predict(mobilenet, images).sum(-1), 1.0, atol=1e-5)

    # 2. At the end of a Sequential model, with logits.
    sequential = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Rescaling(1 / 255),
            keras.layers.Conv2D(8, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
            PointwiseClassifierHead(10, activation=None),
        ],
        name="sequential_nin",
    )
    assert sequential.output_shape == (None, 10)
    digits = rng.integers(0, 256, (16, 28, 28, 1)).astype("float32")
    labels = np.arange(16) % 10
    sequential.compile(
        keras.optimizers.Adam(1e-2),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    first = sequential.fit(digits, labels, batch_size=16, epochs=1, verbose=0)
    second = sequential.fit(digits, labels, batch_size=16, epochs=1, verbose=0)
    assert second.history["loss"][0] < first.history["loss"][0]

    # 3. Save; reload here and in a new Python process.
    cases = {}
    for name, model, data in [
        ("mobilenet", mobilenet, np.concatenate([images[:2], larger[:, :32, :32]])),
        ("sequential", sequential, digits[:4]),
    ]:
        path = tmp_path / f"{name}.keras"
        model.save(path)
        cases[name] = (path, data, _predict(model, data))
    reloaded = keras.models.load_model(tmp_path / "sequential.keras")
    np.testing.assert_array_equal(_predict(reloaded, digits[:4]), cases["sequential"][2])
    report = assert_same_predictions_in_fresh_process(cases, tmp_path, method="call")
    assert report["sequential"]["class"].endswith("Sequential")
