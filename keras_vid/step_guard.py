"""Skipping a training step that would poison the weights, and saying why.

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
from keras import ops, tree

from keras_vid.features import LOGITS, pair_key


def flag_names(pairs):
    """Human-readable name of every flag, in order."""
    names = ["the input batch", "the labels", "the teacher's logits"]
    names += [
        f"the teacher feature of pair {index} ({s_name!r} ← {t_name!r})"
        for index, (s_name, t_name) in enumerate(pairs)
    ]
    names.append("the loss or its gradients")
    return names


def float_tensors(values):
    """The floating-point tensors of a nested structure, in order."""
    return [
        value
        for value in tree.flatten(values)
        if value is not None
        and keras.backend.is_float_dtype(keras.backend.standardize_dtype(value.dtype))
    ]


def finite_groups(groups):
    """One boolean per group (a nested structure of tensors): whether every
    floating-point element in that group is finite. Groups without float
    tensors count as finite.

    This is the `keras.ops` implementation every backend can use; a trainer
    may pass a fused one of its own to `step_flags` as `check_finite` (the
    PyTorch trainer does: in eager mode one call for all tensors is cheaper
    than two ops per tensor).
    """
    checks = []
    for group in groups:
        values = [ops.all(ops.isfinite(value)) for value in float_tensors(group)]
        checks.append(ops.all(ops.stack(values)) if values else ops.convert_to_tensor(True))
    return ops.stack(checks)


def labels_in_range(y, logits):
    """False when `y` holds integer class indices outside `[0, classes)`."""
    if y is None or isinstance(y, (dict, list, tuple)):
        return ops.convert_to_tensor(True)
    if "int" not in keras.backend.standardize_dtype(y.dtype):
        return ops.convert_to_tensor(True)
    sparse = len(y.shape) == len(logits.shape) - 1 or (
        len(y.shape) == len(logits.shape) and y.shape[-1] == 1 and logits.shape[-1] != 1
    )
    classes = logits.shape[-1]
    if not sparse or classes is None:
        return ops.convert_to_tensor(True)
    return ops.logical_and(ops.all(y >= 0), ops.all(y < classes))


def safe_labels(y, logits):
    """`(y, in_range)`: integer class labels clipped into `[0, classes)`, so
    the task loss fails on no backend (TensorFlow and PyTorch raise, JAX
    silently reads a wrong class), and whether they already were. The step
    is skipped when they were not."""
    in_range = labels_in_range(y, logits)
    if y is None or isinstance(y, (dict, list, tuple)):
        return y, in_range
    if "int" not in keras.backend.standardize_dtype(y.dtype):
        return y, in_range
    return ops.clip(y, 0, logits.shape[-1] - 1), in_range


def step_flags(
    num_pairs,
    x,
    y,
    teacher_outputs,
    student_logits,
    loss,
    gradients,
    check_finite=finite_groups,
):
    """All flags of a training step (int32 vector) and whether the update is safe.

    `check_finite` computes the finiteness checks, one per group: the
    input, the teacher's logits, each teacher pair, the loss with the
    gradients (`finite_groups` in this module, or a trainer's fused one).
    """
    groups = [x, teacher_outputs[LOGITS]]
    groups += [teacher_outputs[pair_key(k)] for k in range(num_pairs)]
    groups.append([loss] + [g for g in gradients if g is not None])
    finite = ops.convert_to_tensor(check_finite(groups))
    labels_ok = ops.reshape(labels_in_range(y, student_logits), (1,))
    checks = ops.concatenate([finite[:1], labels_ok, finite[1:]])
    flags = ops.logical_not(checks)
    ok = ops.logical_not(ops.any(flags))
    return ops.cast(flags, "int32"), ok


def describe(pairs, flags):
    """The culprits named by a flag vector (NumPy or list), as a sentence."""
    names = flag_names(pairs)
    at_fault = [name for name, flag in zip(names, list(flags)) if int(flag)]
    if not at_fault:
        return "no culprit was recorded"
    detail = {
        "the input batch": "the input batch contains NaN or Inf",
        "the labels": "the labels are outside [0, number of classes)",
        "the teacher's logits": "the teacher's logits contain NaN or Inf",
        "the loss or its gradients": "the loss or its gradients are NaN or Inf",
    }
    return "; ".join(detail.get(name, f"{name} contains NaN or Inf") for name in at_fault)
