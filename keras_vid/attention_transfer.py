"""Attention transfer (Zagoruyko & Komodakis, ICLR 2017) as a distiller head."""

import keras
from keras import ops

from keras_vid.pair_loss import PairLoss


@keras.saving.register_keras_serializable(package="keras_vid")
class AttentionTransferHead(PairLoss):
    """Activation-based attention transfer loss of one (student, teacher) map pair.

    The attention map of a feature map is the mean over channels of its
    squared activations, flattened and L2-normalised; the loss per example
    is the mean over positions of the squared difference of the two maps
    (the common implementation of the paper's β/2‖·‖ term, used with
    β = 1000 as the pair's weight). When the spatial sizes differ the larger
    attention map is average-pooled to the smaller one. No weights: pass it
    through `VIDDistiller(heads=[...])` so AT runs on the same loop as VID.

    Args:
        epsilon: the floor of the attention map's norm (a map of zeros stays
            finite).
        **kwargs: `keras.layers.Layer` arguments (`name`...).

    Example:

    ```python
    pairs = [("s_block2", "t_block2"), ("s_block3", "t_block3")]
    heads = [keras_vid.AttentionTransferHead() for _ in pairs]
    distiller = keras_vid.VIDDistiller(teacher, student, pairs=pairs, heads=heads)
    distiller.compile(optimizer="adam", loss=loss, vid_weight=1000.0)  # β = 1000
    ```
    """

    def __init__(self, epsilon=1e-12, **kwargs):
        kwargs.pop("autocast", None)
        super().__init__(autocast=False, **kwargs)
        self.epsilon = float(epsilon)
        self.student_pool = None
        self.teacher_pool = None

    def build(self, student_shape, teacher_shape):
        if self.built:
            return
        if len(student_shape) != 4 or len(teacher_shape) != 4:
            raise ValueError(
                f"{self.name}: attention transfer pairs two feature maps (batch, h, w, c). "
                f"Received shapes {tuple(student_shape)} and {tuple(teacher_shape)}."
            )
        s_space, t_space = tuple(student_shape[1:3]), tuple(teacher_shape[1:3])
        if s_space != t_space:
            common = tuple(min(s, t) for s, t in zip(s_space, t_space))
            if common != s_space:
                self.student_pool = keras.layers.AdaptiveAveragePooling2D(common)
            if common != t_space:
                self.teacher_pool = keras.layers.AdaptiveAveragePooling2D(common)
        self.built = True

    def attention(self, features, pool=None):
        """The normalised attention map, shape `(batch, positions)`, float32."""
        features = ops.cast(features, "float32")
        energy = ops.mean(ops.square(features), axis=-1, keepdims=True)
        if pool is not None:
            energy = pool(energy)
        energy = ops.reshape(energy, (ops.shape(energy)[0], -1))
        norm = ops.sqrt(ops.sum(ops.square(energy), axis=-1, keepdims=True))
        return energy / ops.maximum(norm, self.epsilon)

    def call(self, student, teacher, training=None):
        s = self.attention(student, self.student_pool)
        t = ops.stop_gradient(self.attention(teacher, self.teacher_pool))
        return ops.mean(ops.square(s - t), axis=-1)

    def compute_output_spec(self, student, teacher, training=None):
        return keras.KerasTensor((student.shape[0],), dtype="float32")

    def get_config(self):
        config = super().get_config()
        config["epsilon"] = self.epsilon
        return config
