"""FLOPs of a Keras model counted from its layers, and this CPU's peak.

`count_flops(model)` runs one image through the model eagerly while it
records the input and output shape of every leaf layer (nested layers such
as `PointwiseClassifierHead`'s 1x1 convolutions included), then applies a
per-layer formula:

- Conv2D / Dense: 2 FLOPs per multiply-add, plus one per output for the
  bias, plus the activation (relu 1, softmax 3 per element).
- MaxPooling2D: one comparison per input element in a window.
- GlobalAveragePooling2D, Rescaling, Activation: one per element.
- Reshape, Dropout, InputLayer: none.

Training FLOPs per image: forward + backward, where the backward of a
Conv2D/Dense costs twice its multiply-adds (gradient of the input and of
the kernel; the first layer needs no input gradient) and the backward of an
element-wise layer costs as much as its forward. The optimizer update
(about 10 FLOPs per parameter per *step*) is left out: under 1% here.

`cpu_peak()` derives the theoretical peak from /proc/cpuinfo: cores x GHz x
FLOPs per cycle, and states its assumption. `measure_matmul()` measures
what a large matrix product actually reaches (the practical ceiling).

    python benchmarks/flops.py          # prints the table for both heads
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from benchmarks.common import cpu_info

ACTIVATION_FLOPS = {"linear": 0, "relu": 1, "softmax": 3, "sigmoid": 4, "tanh": 4}


def _leaf_layers(layer):
    children = [child for child in getattr(layer, "_layers", []) if child is not layer]
    if not children:
        return [layer]
    leaves = []
    for child in children:
        leaves.extend(_leaf_layers(child))
    return leaves


def _size(shape):
    return int(np.prod([d for d in shape[1:]]))


def _activation_name(layer):
    activation = getattr(layer, "activation", None)
    return getattr(activation, "__name__", "linear") if activation is not None else "linear"


def layer_flops(layer, in_shape, out_shape):
    """Returns `(kind, forward FLOPs, multiply-add FLOPs)` per image of one call."""
    from keras import layers

    name = type(layer).__name__
    out_size = _size(out_shape)
    in_size = _size(in_shape)
    act = ACTIVATION_FLOPS.get(_activation_name(layer), 1) * out_size
    if isinstance(layer, layers.Conv2D):
        kernel = layer.kernel.shape  # (kh, kw, cin / groups, cout)
        macs = out_size * int(np.prod(kernel[:3]))
        bias = out_size if layer.use_bias else 0
        return "conv", 2 * macs + bias + act, 2 * macs
    if isinstance(layer, layers.Dense):
        macs = out_size * int(layer.kernel.shape[0])
        bias = out_size if layer.use_bias else 0
        return "dense", 2 * macs + bias + act, 2 * macs
    if isinstance(layer, (layers.MaxPooling2D, layers.AveragePooling2D)):
        window = int(np.prod(layer.pool_size))
        return "pool", out_size * window, 0
    if isinstance(layer, (layers.GlobalAveragePooling2D, layers.GlobalMaxPooling2D)):
        return "pool", in_size, 0
    if isinstance(layer, (layers.Rescaling, layers.ReLU, layers.BatchNormalization)):
        return "elementwise", in_size * (2 if name == "BatchNormalization" else 1), 0
    if isinstance(layer, (layers.Activation, layers.Softmax)):
        return "elementwise", act or in_size, 0
    if isinstance(layer, (layers.Reshape, layers.Dropout, layers.InputLayer, layers.Flatten)):
        return "free", 0, 0
    return "uncounted", 0, 0


def count_flops(model, input_shape=None):
    """Counts the FLOPs of one image through `model`, layer by layer.

    Args:
        model: a built Keras model.
        input_shape: one image's shape; defaults to `model.input_shape[1:]`.

    Returns:
        A dict with `forward` and `train` (FLOPs per image), `macs` (2 x
        multiply-adds), `layers` (one row per leaf-layer call) and
        `uncounted` (names of leaf layers with weights no formula covers).
    """
    input_shape = tuple(input_shape or model.input_shape[1:])
    calls = []
    leaves = _leaf_layers(model)
    for leaf in leaves:
        original = leaf.call

        def recorder(*args, _leaf=leaf, _call=original, **kwargs):
            out = _call(*args, **kwargs)
            calls.append((_leaf, tuple(args[0].shape), tuple(out.shape)))
            return out

        leaf.call = recorder
    try:
        model(np.zeros((1,) + input_shape, dtype="float32"), training=False)
    finally:
        for leaf in leaves:
            leaf.__dict__.pop("call", None)
    rows, forward, macs, backward, uncounted = [], 0, 0, 0, []
    first_compute = True
    for leaf, in_shape, out_shape in calls:
        kind, flops, mac_flops = layer_flops(leaf, in_shape, out_shape)
        if kind == "uncounted" and leaf.weights:
            uncounted.append(leaf.name)
        # Backward: kernel and input gradients for conv/dense (no input
        # gradient for the first one), the same again for element-wise work.
        if mac_flops:
            backward += (1 if first_compute else 2) * mac_flops + (flops - mac_flops)
            first_compute = False
        else:
            backward += flops
        forward += flops
        macs += mac_flops
        rows.append(
            {
                "layer": leaf.name,
                "type": type(leaf).__name__,
                "input": list(in_shape[1:]),
                "output": list(out_shape[1:]),
                "forward_flops": int(flops),
            }
        )
    return {
        "forward": int(forward),
        "train": int(forward + backward),
        "macs": int(macs),
        "layers": rows,
        "uncounted": uncounted,
    }


def cpu_peak(info=None):
    """Theoretical peak GFLOP/s of this CPU for fp32 and bf16, with its assumption.

    cores x GHz x FLOPs per cycle per core, where FLOPs per cycle is 2 FMA
    units x SIMD lanes x 2: 64 for AVX-512 and 32 for AVX2 in fp32. For
    bf16: AMX tiles 1024 FLOPs/cycle (Intel's figure for Sapphire Rapids),
    AVX512-BF16 dot products 128; without either, bf16 runs on the fp32
    units (converted), so its peak is the fp32 one.
    """
    info = info or cpu_info()
    flags = set(info.get("flags", []))
    cores = int(info.get("cores") or 1)
    ghz = float(info.get("max_mhz") or info.get("mhz") or 0) / 1000
    if "avx512f" in flags:
        fp32, simd = 2 * 16 * 2, "AVX-512 FMA: 2 units x 16 fp32 lanes x 2"
    elif "fma" in flags and "avx2" in flags:
        fp32, simd = 2 * 8 * 2, "AVX2 FMA: 2 units x 8 fp32 lanes x 2"
    elif "avx" in flags:
        fp32, simd = 8 * 2, "AVX: 8 fp32 lanes x (1 mul + 1 add)"
    else:
        fp32, simd = 4 * 2, "SSE: 4 fp32 lanes x (1 mul + 1 add)"
    if "amx_bf16" in flags:
        bf16, bf16_note = 1024, "AMX-BF16 tiles: 1024 FLOPs/cycle"
    elif "avx512_bf16" in flags:
        bf16, bf16_note = 2 * 32 * 2, "AVX512-BF16 dot products: 2 units x 32 pairs x 2"
    else:
        bf16, bf16_note = fp32, "no AMX or AVX512-BF16: bf16 runs on the fp32 units"
    notes = [
        f"{cores} cores x {ghz:.2f} GHz (from /proc/cpuinfo, no turbo assumed) x "
        f"{fp32} FLOPs/cycle ({simd})",
        f"bf16: {bf16} FLOPs/cycle ({bf16_note})",
    ]
    if (
        info.get("vendor") == "AuthenticAMD"
        and info.get("family") == 23
        and (info.get("model_number", 0) < 0x30)
    ):
        notes.append(
            "CPUID says AMD family 23 model < 0x30 (Zen 1, also what the KVM 'EPYC' CPU "
            "model reports whatever the host): a real Zen 1 executes 256-bit FMAs as two "
            "128-bit halves, which would halve this peak; the measured matrix product "
            "below tells which it is"
        )
    return {
        "fp32_gflops": cores * ghz * fp32,
        "bf16_gflops": cores * ghz * bf16,
        "fp32_flops_per_cycle": fp32,
        "bf16_flops_per_cycle": bf16,
        "cores": cores,
        "ghz": ghz,
        "assumption": "; ".join(notes),
    }


def measure_matmul(size=1024, dtype="float32", seconds=2.0):
    """GFLOP/s of the best square matrix product TensorFlow runs here."""
    import tensorflow as tf

    a = tf.random.uniform((size, size), dtype="float32")
    b = tf.random.uniform((size, size), dtype="float32")
    a, b = tf.cast(a, dtype), tf.cast(b, dtype)
    product = tf.function(lambda x, y: tf.linalg.matmul(x, y))
    product(a, b).numpy()
    best, spent = float("inf"), 0.0
    while spent < seconds:
        start = time.perf_counter()
        product(a, b).numpy()
        elapsed = time.perf_counter() - start
        best, spent = min(best, elapsed), spent + elapsed
    return 2 * size**3 / best / 1e9


def main():
    from nin_layers import AllConvNet

    print(cpu_peak()["assumption"])
    for head in ("gap", "reshape"):
        result = count_flops(AllConvNet.tutorial(head))
        print(
            f"\n{head}: forward {result['forward'] / 1e6:.2f} MFLOP/image, "
            f"train {result['train'] / 1e6:.2f} MFLOP/image"
        )
        for row in result["layers"]:
            print(
                f"  {row['layer']:<20} {row['type']:<24} {str(row['output']):<16} "
                f"{row['forward_flops']:>12,}"
            )
    print(f"\nmatmul fp32: {measure_matmul():.1f} GFLOP/s")
    print(f"matmul bf16: {measure_matmul(dtype='bfloat16'):.1f} GFLOP/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
