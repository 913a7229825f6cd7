"""`StepGuard`: skipping a training step that would poison the weights, and saying why.

A NaN or Inf in an input batch or in a teacher feature, or a label outside
the logits' classes, turns one step's update into garbage that no later
step repairs. The training steps compute a small vector of flags for every
batch (in `keras.ops`, shared by all backends) and apply the update only
when every flag is clear; otherwise the student, the heads, the optimizer
state and the BatchNorm statistics stay as they were. The loss trackers
still see the step, so the logs show the non-finite values and
`keras.callbacks.TerminateOnNaN` stops training as usual.

Flag layout (one int32 per entry, 1 = at fault):

    [input, labels, teacher logits, teacher pair 0, ..., teacher pair K-1,
     loss or gradients]
"""

import keras
from keras import ops

from keras_vid.features import LOGITS, pair_key
from keras_vid.finiteness import finite_groups, float_tensors  # noqa: F401


def flag_names(pairs):
    """Human-readable name of every flag, in order."""
    names = ["the input batch", "the labels", "the teacher's logits"]
    names += [
        f"the teacher feature of pair {index} ({s_name!r} ← {t_name!r})"
        for index, (s_name, t_name) in enumerate(pairs)
    ]
    names.append("the loss or its gradients")
    return names


@keras.saving.register_keras_serializable(package="keras_vid")
class StepGuard(keras.layers.Layer):
    """Checks every training step, skips the unsafe ones and keeps a record.

    A `VIDDistiller` owns one (`distiller.step_guard`). Its variables record
    the skipped steps for `NonFiniteMonitor`: `skipped_steps` (how many),
    `last_skip_flags` (the flags of the latest, see the module docstring)
    and `last_skipped_step` (its index among all steps, applied or not).

    A backend's training step calls, in order: `snapshot()` before the
    forward pass (the state a skipped step must put back), `check(...)`
    after the gradients, optionally `agree(...)` across replicas, then
    `restore(saved)` when the step is skipped and `record(...)` always.
    Labels are checked by `check_labels` inside the loss. It does only what
    runs inside a step; the checks of the data before `fit` and `evaluate`
    are `keras_vid.fit_checks`.

    Args:
        pairs: the distiller's `(student_layer, teacher_layer)` pairs (the
            flags name them).
        classes: the student's number of output classes, for the label check
            (`None`: labels are not checked).
        state_variables: a callable returning the non-trainable variables a
            forward pass may change (BatchNorm statistics, seed states).

    Example:

    ```python
    distiller.fit(x, y)
    guard = distiller.step_guard
    if int(keras.ops.convert_to_numpy(guard.skipped_steps)):
        print(keras_vid.step_guard.describe(distiller.pairs, guard.last_skip_flags.numpy()))
    ```
    """

    def __init__(self, pairs, classes=None, state_variables=None, **kwargs):
        kwargs.setdefault("name", "step_guard")
        super().__init__(**kwargs)
        from keras_vid.backend import finite_groups as fused  # the backend's, chosen once

        self.pairs = [tuple(pair) for pair in pairs]
        self.classes = classes
        # Whether the compiled loss takes class indices (set by `compile()`):
        # float labels are then checked to be whole numbers in range too.
        self.sparse_labels = False
        # Whether it is a binary cross-entropy (labels are probabilities in [0, 1]).
        self.binary_labels = False
        self._state_variables = state_variables or (lambda: [])
        self._finite_groups = fused

    def build(self, input_shape=None):
        self.skipped_steps = self.add_weight(
            name="skipped_steps", shape=(), dtype="int32", initializer="zeros", trainable=False
        )
        self.last_skip_flags = self.add_weight(
            name="last_skip_flags",
            shape=(len(flag_names(self.pairs)),),
            dtype="int32",
            initializer="zeros",
            trainable=False,
        )
        self.last_skipped_step = self.add_weight(
            name="last_skipped_step", shape=(), dtype="int32", initializer="zeros", trainable=False
        )
        self.built = True

    def check_labels(self, y):
        """`(y, ok)`: labels every backend's loss kernel accepts, and whether
        the batch's labels were valid.

        Float labels must be finite (NaN labels are replaced by 0, which
        TensorFlow's and PyTorch's kernels accept and JAX would otherwise
        read as class 0 silently); class indices (integer labels, or float
        labels with a sparse loss) must be whole numbers in `[0, classes)`
        and are clipped into it, so the loss fails on no backend."""
        ok = ops.convert_to_tensor(True)
        if y is None or isinstance(y, (dict, list, tuple)):
            return y, ok
        dtype = keras.backend.standardize_dtype(y.dtype)
        floating = keras.backend.is_float_dtype(dtype)
        if floating:
            finite = ops.isfinite(y)
            ok = ops.all(finite)
            y = ops.where(finite, y, ops.zeros_like(y))
        if self.binary_labels:
            ok = ops.logical_and(ok, ops.logical_and(ops.all(y >= 0), ops.all(y <= 1)))
            return y, ok
        sparse = len(y.shape) == 1 or (len(y.shape) == 2 and y.shape[-1] == 1)
        if self.classes is None or not sparse or not self.sparse_labels:
            return y, ok
        in_range = ops.logical_and(ops.all(y >= 0), ops.all(y < self.classes))
        ok = ops.logical_and(ok, in_range)
        if floating:
            ok = ops.logical_and(ok, ops.all(ops.equal(y, ops.floor(y))))
        return ops.clip(y, 0, self.classes - 1), ok

    def snapshot(self):
        """Copies of the state a skipped step puts back (`restore`)."""
        return [ops.copy(variable.value) for variable in self._state_variables()]

    def restore(self, saved):
        for variable, value in zip(self._state_variables(), saved):
            variable.assign(value)

    def check(self, x, teacher_outputs, labels_ok, loss, gradients, optimizer):
        """The flags of a step (int32 vector) and whether its update is safe.
        With a `LossScaleOptimizer`, non-finite gradients are left to it (it
        skips the step and lowers the scale)."""
        if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
            gradients = []
        groups = [x, teacher_outputs[LOGITS]]
        groups += [teacher_outputs[pair_key(k)] for k in range(len(self.pairs))]
        groups.append([loss] + [g for g in gradients if g is not None])
        finite = ops.convert_to_tensor(self._finite_groups(groups))
        labels_ok = ops.reshape(ops.convert_to_tensor(labels_ok), (1,))
        flags = ops.logical_not(ops.concatenate([finite[:1], labels_ok, finite[1:]]))
        return ops.cast(flags, "int32"), ops.logical_not(ops.any(flags))

    @staticmethod
    def agree(flags, total):
        """Flags raised on any replica, given `total` (the backend's sum of a
        flag vector over the replicas), and whether all of them are clear."""
        flags = ops.cast(ops.greater(total(flags), 0), "int32")
        return flags, ops.logical_not(ops.any(ops.greater(flags, 0)))

    def record(self, flags, ok, applied_steps):
        """Count a skipped step and keep its flags and its index
        (`applied_steps`, the optimizer's `iterations`, counts applied steps only)."""
        skipped = ops.logical_not(ok)
        count = self.skipped_steps.value
        step = ops.cast(applied_steps.value, "int32") + count
        self.last_skip_flags.assign(ops.where(skipped, flags, self.last_skip_flags.value))
        self.last_skipped_step.assign(ops.where(skipped, step, self.last_skipped_step.value))
        self.skipped_steps.assign(count + ops.cast(skipped, "int32"))

    def get_config(self):
        config = super().get_config()
        config.update({"pairs": [list(pair) for pair in self.pairs], "classes": self.classes})
        return config


def describe(pairs, flags):
    """The culprits named by a flag vector (NumPy or list), as a sentence."""
    names = flag_names(pairs)
    at_fault = [name for name, flag in zip(names, list(flags)) if int(flag)]
    if not at_fault:
        return "no culprit was recorded"
    detail = {
        "the input batch": "the input batch contains NaN or Inf",
        "the labels": (
            "the labels are NaN or Inf, or class indices that are not whole numbers "
            "in [0, number of classes)"
        ),
        "the teacher's logits": "the teacher's logits contain NaN or Inf",
        "the loss or its gradients": "the loss or its gradients are NaN or Inf",
    }
    return "; ".join(detail.get(name, f"{name} contains NaN or Inf") for name in at_fault)
