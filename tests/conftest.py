"""Shared fixtures: tiny teacher/student models and backend-specific gradients."""

import os
import shutil
import tempfile

import numpy as np
import pytest

# Tests check values, not speed: XLA's CPU backend at optimisation level 0
# compiles 10-15x faster (building a tiny CNN on JAX: 29 s -> 2 s, most of it
# compiling `jax.random` initialisers). Set before the backend initialises;
# subprocesses started by the tests inherit it. Benchmarks do not use it.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0"
    ).strip()

# JAX compiles every new model's training step, and many tests build the same
# small models: a compilation cache shared by this run's processes (the xdist
# workers and the tests' subprocesses inherit the variable) compiles each
# distinct program once. Removed when the run ends; a cache the user set is kept.
_JAX_CACHE = None
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _JAX_CACHE = os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="vid-jax-")
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"

import keras  # noqa: E402

BACKEND = keras.backend.backend()


def pytest_unconfigure(config):
    if _JAX_CACHE and not hasattr(config, "workerinput"):  # the controlling process
        shutil.rmtree(_JAX_CACHE, ignore_errors=True)


def pytest_report_header(config):
    return f"keras {keras.__version__}, backend {BACKEND}"


def small_cnn(prefix, width, num_classes=5, input_shape=(8, 8, 3), counter=None):
    """A tiny CNN with BatchNorm; layer names are `<prefix>_<role>`.

    `g1` (8×8×width), `g2` (4×4×2·width), `pool` (vector), `logits`.
    """
    inputs = keras.Input(input_shape)
    x = inputs
    if counter is not None:
        x = counter(x)
    x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"{prefix}_conv1")(x)
    x = keras.layers.BatchNormalization(name=f"{prefix}_bn1")(x)
    x = keras.layers.ReLU(name=f"{prefix}_g1")(x)
    x = keras.layers.MaxPooling2D(name=f"{prefix}_down")(x)
    x = keras.layers.Conv2D(2 * width, 3, padding="same", use_bias=False, name=f"{prefix}_conv2")(
        x
    )
    x = keras.layers.BatchNormalization(name=f"{prefix}_bn2")(x)
    x = keras.layers.ReLU(name=f"{prefix}_g2")(x)
    x = keras.layers.GlobalAveragePooling2D(name=f"{prefix}_pool")(x)
    outputs = keras.layers.Dense(num_classes, name=f"{prefix}_logits")(x)
    return keras.Model(inputs, outputs, name=prefix)


CNN_PAIRS = [("s_g1", "t_g1"), ("s_g2", "t_g2"), ("s_pool", "t_logits")]


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    x = rng.random((32, 8, 8, 3)).astype("float32")
    y = rng.integers(0, 5, size=(32,))
    return x, y


@pytest.fixture
def models():
    keras.utils.set_random_seed(0)
    return small_cnn("t", 8), small_cnn("s", 4)


def to_numpy(x):
    return keras.ops.convert_to_numpy(x)


def weights_of(model_or_layer):
    return [to_numpy(w).copy() for w in model_or_layer.weights]


def value_and_grad(fn, value):
    """`fn(x)` and d fn / d x at `value` (a NumPy array), on the current backend."""
    if BACKEND == "tensorflow":
        import tensorflow as tf

        x = tf.Variable(value)
        with tf.GradientTape() as tape:
            y = fn(x)
        grad = tape.gradient(y, x)
        return to_numpy(y), None if grad is None else to_numpy(grad)
    if BACKEND == "jax":
        import jax

        y, g = jax.value_and_grad(fn)(jax.numpy.asarray(value))
        return to_numpy(y), to_numpy(g)
    import torch

    x = torch.tensor(value, requires_grad=True)
    y = fn(x)
    y.backward()
    grad = None if x.grad is None else x.grad.detach().cpu().numpy()
    return y.detach().cpu().numpy(), grad


os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


class CallCounter(keras.layers.Layer):
    """An identity layer that counts its calls (class-wide), to check that
    each model runs once per training step."""

    calls = 0

    def call(self, x):
        CallCounter.calls += 1
        return x


def calls_per_step(distiller, x, y, batch_size):
    """Fit one epoch (eagerly) and return, per step, how many times the
    `CallCounter` layers of the teacher and the student ran."""
    counts = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            CallCounter.calls = 0

        def on_train_batch_end(self, batch, logs=None):
            counts.append(CallCounter.calls)

    distiller.fit(x, y, batch_size=batch_size, epochs=1, verbose=0, callbacks=[Record()])
    return counts
