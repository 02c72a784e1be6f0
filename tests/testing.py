"""Test helpers in the style of keras-hub's `TestCase.run_layer_test`.

- `run_layer_test`: one call checks a layer's output shape, dtype,
  `compute_output_shape`, config round trip, dynamic height/width in a
  Functional model, `.keras` save/load, `jit_compile=True` and the mixed
  precision policies.
- `assert_same_predictions_in_fresh_process`: reloads `.keras` files in a
  new Python interpreter and compares its predictions with ours.
- NumPy re-statements of the layers (`numpy_head`, `numpy_all_conv_net`)
  that the numerical tests compare against, in float64.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import keras
import numpy as np

MIXED_POLICIES = ("mixed_float16", "mixed_bfloat16")
# Largest absolute difference to the float32 result accepted under each
# policy, for outputs in [0, 1] or logits of order 1.
MIXED_ATOL = {"mixed_float16": 1e-2, "mixed_bfloat16": 5e-2}


def to_numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def dtype_name(x):
    return keras.backend.standardize_dtype(x.dtype)


# ------------------------------------------------------------ layer checks
def run_layer_test(
    layer_cls,
    init_kwargs,
    input_data,
    expected_output_shape,
    *,
    tmp_path=None,
    expected_num_trainable_weights=None,
    run_jit_check=True,
    run_mixed_precision_check=True,
    atol=1e-5,
):
    """Runs the standard checks on a channels_last image layer.

    Args:
        layer_cls: the layer class.
        init_kwargs: dict of constructor arguments.
        input_data: float array `(batch, height, width, channels)`.
        expected_output_shape: the exact output shape for `input_data`.
        tmp_path: folder for the `.keras` file; `None` skips saving.
        expected_num_trainable_weights: checked when given.
        run_jit_check: compiles a model with `jit_compile=True`.
        run_mixed_precision_check: rebuilds the layer under each policy of
            `MIXED_POLICIES` with the same weights and checks a float32
            output close to the float32 one.
        atol: tolerance between float32 computations of the same values.

    Returns:
        The float32 output of the layer on `input_data` (a NumPy array).
    """
    input_data = np.asarray(input_data, dtype="float32")
    expected_output_shape = tuple(expected_output_shape)
    layer = layer_cls(**init_kwargs)
    output = layer(input_data)
    assert dtype_name(output) == "float32"
    output = to_numpy(output)
    assert output.shape == expected_output_shape
    assert tuple(layer.compute_output_shape(input_data.shape)) == expected_output_shape
    if expected_num_trainable_weights is not None:
        assert len(layer.trainable_weights) == expected_num_trainable_weights

    # Config round trip: same config, same outputs with the same weights.
    config = layer.get_config()
    json.dumps(keras.saving.serialize_keras_object(layer))  # JSON-safe
    revived = layer_cls.from_config(config)
    assert revived.get_config() == config
    revived(input_data)
    revived.set_weights(layer.get_weights())
    np.testing.assert_allclose(to_numpy(revived(input_data)), output, atol=atol)

    # Unknown height and width in a Functional model.
    channels = input_data.shape[-1]
    inputs = keras.Input((None, None, channels))
    outputs = layer(inputs)
    assert tuple(outputs.shape) == (None,) + expected_output_shape[1:]
    assert dtype_name(outputs) == "float32"
    model = keras.Model(inputs, outputs)
    predicted = model.predict(input_data, verbose=0)
    np.testing.assert_allclose(predicted, output, atol=atol)
    larger = np.tile(input_data, (1, 2, 3, 1))
    assert model.predict(larger, verbose=0).shape == expected_output_shape

    if tmp_path is not None:
        path = tmp_path / f"{layer_cls.__name__}_{layer.name}.keras"
        model.save(path)
        reloaded = keras.models.load_model(path)
        np.testing.assert_array_equal(reloaded.predict(input_data, verbose=0), predicted)
        assert reloaded.layers[-1].get_config() == config

    if run_jit_check:
        jitted = keras.Model(inputs, outputs)
        jitted.compile(jit_compile=True)
        np.testing.assert_allclose(jitted.predict(input_data, verbose=0), output, atol=atol)

    if run_mixed_precision_check:
        for policy in MIXED_POLICIES:
            check_mixed_precision(layer_cls, init_kwargs, layer, input_data, output, policy)
    return output


def check_mixed_precision(layer_cls, init_kwargs, reference, input_data, output, policy):
    """Builds the layer under the global `policy`, checks a float32 output."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        layer = layer_cls(**init_kwargs)
        assert layer.dtype_policy.name == policy
        layer(input_data)
        layer.set_weights(reference.get_weights())
        mixed = layer(input_data)
        assert dtype_name(mixed) == "float32", policy
        np.testing.assert_allclose(to_numpy(mixed), output, atol=MIXED_ATOL[policy])
    finally:
        keras.config.set_dtype_policy(previous)


# --------------------------------------------------- fresh-process reloads
_RELOAD_SCRIPT = textwrap.dedent(
    """
    import importlib, json, sys
    request = json.loads(sys.argv[1])
    sys.path[:0] = request["sys_path"]
    for module in request["imports"]:
        importlib.import_module(module)
    import keras
    import numpy as np
    arrays = np.load(request["arrays"])
    report = {}
    for name, path in request["models"].items():
        model = keras.models.load_model(path)
        if request["method"] == "call":
            predicted = keras.ops.convert_to_numpy(model(arrays[name + ".x"], training=False))
        else:
            predicted = model.predict(arrays[name + ".x"], verbose=0)
        expected = arrays[name + ".y"]
        report[name] = {
            "shape": list(predicted.shape),
            "max_abs_diff": float(np.max(np.abs(predicted - expected))),
            "class": type(model).__module__ + "." + type(model).__qualname__,
        }
    print("RELOAD_REPORT " + json.dumps(report))
    """
)


def assert_same_predictions_in_fresh_process(
    cases,
    tmp_path,
    *,
    imports=("nin_layers",),
    sys_path=(),
    method="predict",
    atol=1e-6,
    timeout=240,
):
    """Reloads `.keras` files in a new interpreter and compares predictions.

    A user reloads a model in a new Python session, where only the modules
    they import have registered their classes. This starts such a session
    (`sys.executable`), imports `imports`, calls `keras.models.load_model`
    on each file and `predict` on the saved inputs.

    Args:
        cases: dict `name -> (path_to_keras_file, inputs, expected_outputs)`.
        tmp_path: folder for the exchanged arrays.
        imports: modules the new session imports first (as a user would).
        sys_path: folders put in front of `sys.path` (for user modules).
        method: `"predict"` (`model.predict`) or `"call"` (an eager
            `model(x, training=False)`); compute `expected_outputs` the
            same way.
        atol: largest accepted absolute difference.
        timeout: seconds before the new session is considered stuck.

    Returns:
        The report: `name -> {"shape", "max_abs_diff", "class"}`.
    """
    arrays = {}
    models = {}
    for name, (path, inputs, expected) in cases.items():
        arrays[name + ".x"] = np.asarray(inputs)
        arrays[name + ".y"] = np.asarray(expected)
        models[name] = str(path)
    arrays_path = tmp_path / "fresh_process_arrays.npz"
    np.savez(arrays_path, **arrays)
    request = {
        "arrays": str(arrays_path),
        "models": models,
        "imports": list(imports),
        "sys_path": [str(p) for p in sys_path],
        "method": method,
    }
    result = subprocess.run(
        [sys.executable, "-c", _RELOAD_SCRIPT, json.dumps(request)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith("RELOAD_REPORT ")]
    assert lines, result.stdout[-2000:] + result.stderr[-2000:]
    report = json.loads(lines[-1][len("RELOAD_REPORT ") :])
    for name, (_, _, expected) in cases.items():
        assert report[name]["shape"] == list(np.shape(expected)), report
        assert report[name]["max_abs_diff"] <= atol, report
    return report


# ------------------------------------------------- NumPy re-statements
def np_softmax(x, axis=-1):
    x = x - x.max(axis=axis, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=axis, keepdims=True)


NUMPY_ACTIVATIONS = {
    None: lambda x: x,
    "linear": lambda x: x,
    "softmax": np_softmax,
    "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
    "relu": lambda x: np.maximum(x, 0.0),
    "tanh": np.tanh,
}


def _weights(layer):
    weights = [to_numpy(w).astype("float64") for w in layer.weights]
    kernel = weights[0]
    bias = weights[1] if len(weights) > 1 else np.zeros(kernel.shape[-1])
    return kernel, bias


def np_pointwise(x, conv):
    """A 1x1 convolution on a channels_last array: `x @ W + b`."""
    kernel, bias = _weights(conv)
    return x @ kernel[0, 0] + bias


def numpy_head(head, features, activation="softmax", bottleneck_activation="relu"):
    """The head's forward pass at inference, re-stated in float64 NumPy.

    Args:
        head: a built `PointwiseClassifierHead` (channels_last).
        features: array `(batch, height, width, channels)`.
        activation: the head's output activation, by name (or None).
        bottleneck_activation: the bottleneck's activation, by name.

    Returns:
        `(output, class_maps)`: the head's output `(batch, num_classes)` and
        the class scores at every position `(batch, h, w, num_classes)`.
    """
    act = NUMPY_ACTIVATIONS[activation]
    x = np.asarray(features, dtype="float64")
    if head.mode == "reshape":
        x = NUMPY_ACTIVATIONS[bottleneck_activation](np_pointwise(x, head.bottleneck))
    class_maps = np_pointwise(x, head.classifier)
    if head.activation_order == "activate_then_pool":
        output = act(class_maps).mean(axis=(1, 2))
    elif head.mode == "reshape":
        # Pool the bottleneck first, then the 1x1 convolution on a 1x1 map.
        output = act(np_pointwise(x.mean(axis=(1, 2)), head.classifier))
    else:
        output = act(class_maps.mean(axis=(1, 2)))
    return output, class_maps


def np_conv3x3_same(x, conv):
    """A 3x3 stride-1 "same" convolution with relu, channels_last."""
    kernel, bias = _weights(conv)
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    height, width = x.shape[1:3]
    out = np.zeros(x.shape[:3] + (kernel.shape[-1],))
    for i in range(3):
        for j in range(3):
            out += padded[:, i : i + height, j : j + width, :] @ kernel[i, j]
    return np.maximum(out + bias, 0.0)


def np_max_pool2(x):
    """2x2 max pooling, stride 2, "valid" padding, channels_last."""
    height, width = x.shape[1] // 2 * 2, x.shape[2] // 2 * 2
    x = x[:, :height, :width, :]
    blocks = x.reshape(x.shape[0], height // 2, 2, width // 2, 2, x.shape[3])
    return blocks.max(axis=(2, 4))


def numpy_all_conv_net(model, images, activation="softmax"):
    """`AllConvNet`'s forward pass (default backbone), in float64 NumPy."""
    x = np.asarray(images, dtype="float64")
    if model.rescaling is not None:
        x = x * model.rescaling
    for index in range(1, len(model.filters) + 1):
        x = np_conv3x3_same(x, model.get_layer(f"block{index}_conv"))
        x = np_max_pool2(x)
    return numpy_head(model.head, x, activation=activation)
