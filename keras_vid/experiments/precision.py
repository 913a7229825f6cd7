"""The training precision that is fastest on this machine, measured.

`mixed_bfloat16` is the fastest setting where bfloat16 has hardware behind
it (a GPU, or a CPU with AMX or AVX-512 BF16: an airbench network trained
1.8× faster than in float32 on such a CPU) and much the slowest where it
has not: on an AVX2-only CPU the same network trained about 13× slower in
`mixed_bfloat16` than in float32, the conversions done in software. Rather
than guess from the hardware's name, `fastest_dtype_policy` times one
training step of a small Conv–BatchNorm–GELU model in each precision and
keeps bfloat16 only when it is clearly faster.
"""

import time

import keras
import numpy as np

POLICIES = ("float32", "mixed_bfloat16")


def choose_policy(float32_seconds, bfloat16_seconds, margin=1.2):
    """`mixed_bfloat16` when it ran at least `margin` × faster, else float32
    (a tie keeps the precise one)."""
    if bfloat16_seconds * margin <= float32_seconds:
        return "mixed_bfloat16"
    return "float32"


def _step_seconds(policy, shape, repeats):
    """Median seconds of one `train_on_batch` of a convolution, BatchNorm and
    GELU block (an airbench group's layers) under `policy`."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        model = keras.Sequential(
            [
                keras.Input(shape[1:]),
                keras.layers.Conv2D(shape[-1], 3, padding="same", use_bias=False),
                keras.layers.BatchNormalization(),
                keras.layers.Activation("gelu"),
                keras.layers.GlobalAveragePooling2D(),
                keras.layers.Dense(10),
            ]
        )
    finally:
        keras.config.set_dtype_policy(previous)
    model.compile(
        optimizer=keras.optimizers.SGD(0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=False,
    )
    x = np.random.default_rng(0).normal(size=shape).astype("float32")
    y = np.arange(shape[0]) % 10
    model.train_on_batch(x, y)  # warm-up: tracing and allocation
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.train_on_batch(x, y)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def fastest_dtype_policy(shape=(32, 16, 16, 128), repeats=3):
    """The faster of float32 and `mixed_bfloat16` for a training step of a
    3×3 convolution, BatchNorm and GELU on `shape` (channels-last), timed
    here: median of `repeats` after a warm-up."""
    return choose_policy(
        _step_seconds("float32", shape, repeats),
        _step_seconds("mixed_bfloat16", shape, repeats),
    )


def resolve_dtype_policy(policy):
    """`policy`, or the measured fastest one for `"auto"`."""
    return fastest_dtype_policy() if policy == "auto" else policy
