"""An airbench-style CIFAR network: a fast-training strong teacher on a CPU.

The architecture follows Keller Jordan's airbench94 (94 % on CIFAR-10 in
about 10 epochs): a fixed 2×2 patch-whitening convolution, then three groups
of [conv → max-pool → BN → GELU → conv → BN → GELU], a global max-pool and a
bias-free linear layer scaled by 1/9. Written for Keras from the published
description; differences: the whitening convolution is padded ("same"), so
the groups' maps are 32/16/8/4 like the small students' stages, and the input
is raw RGB in [0, 255] (the normalisation is the first layer), so a saved
teacher needs no preprocessing.

Layer names: `block<k>` (group k's output, after its last GELU),
`block<k>_shift2` (the same feature before that GELU), `pool`, `logits`.
"""

import math

import keras
import numpy as np
from keras import ops

# Per-channel mean and std of CIFAR-10's training images on the 0-255 scale.
CIFAR10_MEAN = (125.3, 123.0, 113.9)
CIFAR10_STD = (63.0, 62.1, 66.7)


@keras.saving.register_keras_serializable(package="keras_vid")
class PatchWhitening(keras.layers.Layer):
    """A 2×2 convolution whose kernel is fixed (set by `set_whitening`) and
    whose bias trains: it decorrelates the pixels of each 2×2 patch.

    The kernel holds the eigenvectors of the patch covariance scaled by
    1/√(eigenvalue + eps), and their negatives (so a GELU after it keeps
    both signs): `filters = 2 · patch_size² · channels`.
    """

    def __init__(self, patch_size=2, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(patch_size, int) or patch_size < 1:
            raise ValueError(
                f"PatchWhitening: `patch_size` must be a positive integer. "
                f"Received: patch_size={patch_size!r}"
            )
        self.patch_size = patch_size

    def build(self, input_shape):
        channels = input_shape[-1]
        k = self.patch_size
        self.filters = 2 * k * k * channels
        self.kernel = self.add_weight(
            name="kernel",
            shape=(k, k, channels, self.filters),
            initializer="glorot_uniform",
            trainable=False,
        )
        self.bias = self.add_weight(name="bias", shape=(self.filters,), initializer="zeros")

    def set_whitening(self, images, eps=5e-4):
        """Set the kernel from `images` (already normalised, NHWC NumPy)."""
        k = self.patch_size
        x = np.asarray(images, dtype="float64")
        n, h, w, c = x.shape
        patches = np.stack(
            [x[:, i : h - k + 1 + i, j : w - k + 1 + j, :] for i in range(k) for j in range(k)],
            axis=3,
        )  # (n, h', w', k*k, c): the (i, j) order of the kernel's first two axes
        patches = patches.reshape(-1, k * k * c)
        covariance = patches.T @ patches / len(patches)
        eigenvalues, eigenvectors = np.linalg.eigh(covariance)
        order = np.argsort(eigenvalues)[::-1]
        eigenvalues, eigenvectors = eigenvalues[order], eigenvectors[:, order]
        scaled = eigenvectors / np.sqrt(eigenvalues + eps)  # columns are filters
        kernel = np.concatenate([scaled, -scaled], axis=1).reshape(k, k, c, self.filters)
        self.kernel.assign(kernel.astype("float32"))

    def call(self, inputs):
        x = ops.conv(inputs, ops.cast(self.kernel, inputs.dtype), padding="same")
        return x + ops.cast(self.bias, x.dtype)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], 2 * self.patch_size**2 * input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "patch_size": self.patch_size}


@keras.saving.register_keras_serializable(package="keras_vid")
class ScaledShift(keras.layers.Layer):
    """`x + multiplier · b` with a trainable per-channel `b`: a BatchNorm
    shift whose effective learning rate is multiplier² times the optimizer's
    (airbench trains its BN biases at 64× the learning rate: multiplier 8).
    The decoupled weight decay shrinks it by the same fraction as the other
    weights."""

    def __init__(self, multiplier=8.0, **kwargs):
        super().__init__(**kwargs)
        if not multiplier > 0:
            raise ValueError(
                f"ScaledShift: `multiplier` must be > 0. Received: multiplier={multiplier!r}"
            )
        self.multiplier = float(multiplier)

    def build(self, input_shape):
        self.shift = self.add_weight(name="shift", shape=(input_shape[-1],), initializer="zeros")

    def call(self, inputs):
        return inputs + ops.cast(self.multiplier * self.shift, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "multiplier": self.multiplier}


@keras.saving.register_keras_serializable(package="keras_vid")
class DiracUniform(keras.initializers.Initializer):
    """A conv kernel initialiser: PyTorch's default uniform(±1/√fan_in), with
    output channel i < input channels set to the identity on input channel i
    (airbench's "dirac" start: each conv first passes its input through)."""

    def __init__(self, seed=None):
        self.seed = seed

    def __call__(self, shape, dtype=None):
        kh, kw, cin, cout = shape
        bound = 1.0 / math.sqrt(kh * kw * cin)
        rng = np.random.default_rng(self.seed)
        kernel = rng.uniform(-bound, bound, size=shape).astype("float32")
        n = min(cin, cout)
        kernel[:, :, :, :n] = 0.0
        kernel[kh // 2, kw // 2, np.arange(n), np.arange(n)] = 1.0
        return ops.convert_to_tensor(kernel, dtype=dtype or "float32")

    def get_config(self):
        return {"seed": self.seed}


def airbench_block_names(groups=3, pre_activation=False):
    """The names of each group's output (`block<k>`), or with
    `pre_activation=True` of the same feature before its last GELU."""
    return tuple(
        f"block{k}_shift2" if pre_activation else f"block{k}" for k in range(1, groups + 1)
    )


def airbench(
    widths=(64, 256, 256),
    num_classes=10,
    input_shape=(32, 32, 3),
    mean=CIFAR10_MEAN,
    std=CIFAR10_STD,
    bn_momentum=0.6,
    seed=0,
    name=None,
):
    """Build an airbench-style network mapping raw RGB (0-255) to logits.

    Args:
        widths: channels of the conv groups (airbench94: 64, 256, 256;
            airbench95: 128, 384, 384).
        num_classes: size of the `logits` layer.
        input_shape: channels-last image shape.
        mean, std: per-channel statistics of the training images (0-255
            scale); the model normalises its input with them.
        bn_momentum: BatchNormalization momentum (Keras convention; 0.6 as
            airbench).
        seed: seed of the convolution initialisers.
        name: model name (default `"airbench_<w1>_<w2>..."`).

    Returns:
        A functional `keras.Model`. Call `model.get_layer("whiten").set_whitening(x)`
        with normalised training images before training (see
        `keras_vid.experiments.fast_teacher`).

    Example:

    ```python
    from keras_vid.models.airbench import airbench

    teacher = airbench((64, 256, 256))
    teacher.summary()
    ```
    """
    widths = tuple(int(w) for w in widths)
    if not widths or min(widths) < 1:
        raise ValueError(f"airbench: `widths` must be positive integers. Received: {widths!r}")
    inputs = keras.Input(input_shape, name="image")
    variance = [s * s for s in std]
    x = keras.layers.Normalization(mean=list(mean), variance=variance, name="normalize")(inputs)
    x = PatchWhitening(2, name="whiten")(x)
    x = keras.layers.Activation("gelu", name="whiten_act")(x)
    counter = iter(range(10_000))
    for k, width in enumerate(widths, start=1):
        for n in (1, 2):
            x = keras.layers.Conv2D(
                width,
                3,
                padding="same",
                use_bias=False,
                kernel_initializer=DiracUniform(seed + next(counter)),
                name=f"block{k}_conv{n}",
            )(x)
            if n == 1:
                x = keras.layers.MaxPooling2D(2, name=f"block{k}_pool")(x)
            x = keras.layers.BatchNormalization(
                momentum=bn_momentum, center=False, scale=False, name=f"block{k}_bn{n}"
            )(x)
            x = ScaledShift(8.0, name=f"block{k}_shift{n}")(x)
            act = f"block{k}" if n == 2 else f"block{k}_act1"
            x = keras.layers.Activation("gelu", name=act)(x)
    x = keras.layers.GlobalMaxPooling2D(name="pool")(x)
    x = keras.layers.Dense(num_classes, use_bias=False, name="fc")(x)
    outputs = keras.layers.Rescaling(1.0 / 9.0, name="logits", dtype="float32")(x)
    return keras.Model(
        inputs, outputs, name=name or "airbench_" + "_".join(str(w) for w in widths)
    )
