"""Loss terms of variational information distillation, written once in `keras.ops`.

Every function here takes and returns backend tensors and runs unchanged on
TensorFlow, JAX and PyTorch. They compute in float32 whatever the inputs'
dtype, so half-precision features cannot overflow the squared error.
"""

import numpy as np
from keras import ops

REDUCTIONS = ("mean", "sum")


def gaussian_nll(teacher, mean, std, reduction="mean"):
    """Per-example negative log-likelihood of `teacher` under N(mean, std²).

    The constant `0.5 * log(2π)` is dropped, as in the paper:

        nll = reduce_{h,w,c} [ log σ_c + (t − μ)² / (2 σ_c²) ]

    Args:
        teacher: teacher features, shape `(batch, ..., channels)`.
        mean: predicted mean μ(s), the same shape as `teacher`.
        std: per-channel standard deviation σ, shape `(channels,)`.
        reduction: `"mean"` averages over the non-batch elements (so a weight
            of 1 suits any layer size); `"sum"` sums them (the paper's form).

    Returns:
        A float32 tensor of shape `(batch,)`.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(
            f"`reduction` must be one of {REDUCTIONS}. Received: reduction={reduction!r}"
        )
    teacher = ops.cast(teacher, "float32")
    mean = ops.cast(mean, "float32")
    std = ops.cast(std, "float32")
    per_element = ops.log(std) + ops.square(teacher - mean) / (2.0 * ops.square(std))
    axes = tuple(range(1, len(per_element.shape)))
    if not axes:
        return per_element
    if reduction == "sum":
        return ops.sum(per_element, axis=axes)
    return ops.mean(per_element, axis=axes)


def softened_kl(teacher_logits, student_logits, temperature):
    """Hinton's knowledge-distillation term, per example: T² · KL(p_T ‖ p_S).

    `p_T` and `p_S` are the softmaxes of the logits divided by `temperature`.
    The T² factor keeps the gradient scale independent of the temperature.

    Returns:
        A float32 tensor of shape `(batch,)`.
    """
    teacher_logits = ops.cast(teacher_logits, "float32") / temperature
    student_logits = ops.cast(student_logits, "float32") / temperature
    teacher_log_probs = ops.log_softmax(teacher_logits, axis=-1)
    student_log_probs = ops.log_softmax(student_logits, axis=-1)
    kl = ops.sum(ops.exp(teacher_log_probs) * (teacher_log_probs - student_log_probs), axis=-1)
    return (temperature**2) * kl


def weighted_batch_mean(per_example, sample_weight=None):
    """Mean over the batch of a per-example loss, optionally weighted.

    Matches Keras's `"sum_over_batch_size"` reduction: the weighted sum is
    divided by the batch size, not by the sum of the weights, so a VID term
    is weighted exactly like the compiled task loss.
    """
    per_example = ops.convert_to_tensor(per_example)
    if sample_weight is not None:
        sample_weight = ops.reshape(ops.cast(sample_weight, "float32"), (-1,))
        per_example = per_example * sample_weight
    return ops.mean(per_example)


def inverse_softplus(value):
    """Return α such that `softplus(α) == value`, for initialising α (NumPy)."""
    value = np.asarray(value, dtype="float64")
    # log(expm1(v)) is exact but overflows for large v, where softplus(v) ≈ v.
    return np.where(value > 20.0, value, np.log(np.expm1(np.minimum(value, 20.0))))
