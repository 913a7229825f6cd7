"""`TokenPooling`: bring a token sequence to another length, class tokens apart.

Two vision transformers with different patch sizes see the same image as
different numbers of patch tokens (a 32×32 image is 16 patches of 8×8 or 4
of 16×16), usually after one or more class tokens. To regress one onto the
other, a `VIDHead` average-pools the longer patch sequence to the shorter
one, as it pools the larger of two feature maps. The leading class tokens
summarise the whole input rather than one place in it, so they are kept out
of the pooling: paired one to one, or dropped from the loss.
"""

import math

import keras
from keras import ops


def grid_side(patches, role, owner):
    """The side of a square grid of `patches` tokens, or a clear error."""
    side = math.isqrt(patches)
    if side * side != patches:
        raise ValueError(
            f"{owner}: `token_grid=True` reads the {role}'s patch tokens as a square grid, "
            f"but {patches} is not a square. Received: {role} patch tokens {patches}"
        )
    return side


@keras.saving.register_keras_serializable(package="keras_vid")
class TokenPooling(keras.layers.Layer):
    """Average-pool the patch tokens of `(batch, tokens, dim)` to `length`.

    Args:
        length: number of patch tokens out (a square number with `grid`), or
            `None` to keep them as they are (only the class tokens dropped).
        class_tokens: number of leading tokens (a ViT's class token: 1) left
            out of the pooling.
        keep_class_tokens: put the class tokens back in front of the pooled
            patches (default); `False` drops them.
        grid: the patch tokens are a square grid in row-major order (ViT):
            pool it as an image, each axis on its own, instead of pooling
            runs of consecutive tokens.
        **kwargs: standard `keras.layers.Layer` arguments.
    """

    def __init__(self, length, class_tokens=0, keep_class_tokens=True, grid=False, **kwargs):
        super().__init__(**kwargs)
        if length is not None and (not isinstance(length, int) or length < 1):
            raise ValueError(
                "TokenPooling: `length` must be a positive integer or None. "
                f"Received: length={length!r}"
            )
        if grid and length is None:
            raise ValueError("TokenPooling: `grid=True` needs a `length`. Received: length=None")
        if not isinstance(class_tokens, int) or class_tokens < 0:
            raise ValueError(
                "TokenPooling: `class_tokens` must be an integer ≥ 0. "
                f"Received: class_tokens={class_tokens!r}"
            )
        self.length = length
        self.class_tokens = class_tokens
        self.keep_class_tokens = bool(keep_class_tokens)
        self.grid = bool(grid)
        self.pool = None

    def build(self, input_shape):
        if self.length is None:
            return
        patches = input_shape[1] - self.class_tokens
        if self.grid:
            out_side = grid_side(self.length, "output", f"TokenPooling '{self.name}'")
            self.side = grid_side(patches, "input", f"TokenPooling '{self.name}'")
            if out_side != self.side:
                self.pool = keras.layers.AdaptiveAveragePooling2D((out_side, out_side))
                self.pool.build((input_shape[0], self.side, self.side, input_shape[-1]))
        elif patches != self.length:
            self.pool = keras.layers.AdaptiveAveragePooling1D(self.length)
            self.pool.build((input_shape[0], patches, input_shape[-1]))

    def call(self, tokens):
        lead, patches = tokens[:, : self.class_tokens], tokens[:, self.class_tokens :]
        if self.pool is not None:
            if self.grid:
                shape = ops.shape(patches)
                image = ops.reshape(patches, (shape[0], self.side, self.side, shape[-1]))
                patches = ops.reshape(self.pool(image), (shape[0], self.length, shape[-1]))
            else:
                patches = self.pool(patches)
        if self.keep_class_tokens and self.class_tokens:
            return ops.concatenate([lead, patches], axis=1)
        return patches

    def compute_output_shape(self, input_shape):
        kept = self.class_tokens if self.keep_class_tokens else 0
        if self.length is None:
            length = None if input_shape[1] is None else input_shape[1] - self.class_tokens
        else:
            length = self.length
        return (input_shape[0], None if length is None else length + kept, input_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "length": self.length,
                "class_tokens": self.class_tokens,
                "keep_class_tokens": self.keep_class_tokens,
                "grid": self.grid,
            }
        )
        return config
