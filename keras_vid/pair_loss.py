"""`PairLoss`: the contract of a loss on one (student layer, teacher layer) pair."""

import keras


class PairLoss(keras.layers.Layer):
    """Base class of the layers `VIDDistiller(heads=...)` takes, one per pair.

    A pair loss scores a student feature against the teacher feature it is
    paired with. `VIDHead` is one; attention transfer
    (`keras_vid.AttentionTransferHead`) is another.
    Subclasses implement:

    - `build(student_shape, teacher_shape)`: create every weight, once the
      two feature shapes are known (the distiller calls it at construction
      with the symbolic shapes, batch axis first). Raise `ValueError` for
      shapes the loss cannot pair; the distiller adds the pair to the message.
    - `call(student, teacher, training=None)`: the per-example loss, shape
      `(batch,)`, float32. The distiller averages it over the batch (with the
      sample weights) and multiplies it by the pair's `vid_weight`. The
      teacher feature is a constant of the step; the loss's gradient reaches
      the student feature and the layer's own weights. On a pair of token
      features `(batch, tokens, dim)` with a padding mask, the distiller
      passes it as `padding_mask` (`(batch, tokens)`, true at real tokens):
      a pair loss used there must accept it, e.g.
      `call(student, teacher, training=None, padding_mask=None)`.

    Like `keras.distillation.DistillationLoss`, a pair loss is a small
    object with one job; unlike it, it may own trainable weights (a
    regressor, a variance), which the distiller's optimizer trains.

    Example:

    ```python
    class CosinePairLoss(keras_vid.PairLoss):
        def build(self, student_shape, teacher_shape):
            self.project = keras.layers.Dense(teacher_shape[-1])
            self.project.build(student_shape)
            self.built = True

        def call(self, student, teacher, training=None):
            s = keras.ops.normalize(self.project(student), axis=-1)
            t = keras.ops.normalize(teacher, axis=-1)
            return 1.0 - keras.ops.sum(s * t, axis=-1)
    ```
    """

    def build(self, student_shape, teacher_shape):
        self.built = True

    def compute_mask(self, *args, **kwargs):
        """None: a pair loss consumes its inputs' Keras masks (the distiller
        passes the padding mask explicitly); its per-example output has none."""
        return None

    def call(self, student, teacher, training=None):
        raise NotImplementedError(
            f"{type(self).__name__} must implement `call(student, teacher, training=None)` "
            "returning the per-example loss, shape (batch,)."
        )
