"""Building blocks of fast-training CNNs (airbench's), registered with Keras so a
saved model that uses them loads after `import keras_vid`:

- `PatchWhitening`: a fixed patch-whitening convolution with a trainable bias;
- `ScaledShift`: a per-channel shift whose learning rate is multiplier² × the optimizer's;
- `DiracUniform`: a convolution initialiser that starts as the identity.
"""

import math

import keras
import numpy as np
from keras import ops


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
