"""Loss terms of variational information distillation, written once in `keras.ops`.

Every function here takes and returns backend tensors and runs unchanged on
TensorFlow, JAX and PyTorch. They compute in float32 whatever the inputs'
dtype, so half-precision features cannot overflow the squared error.
"""

import math

import numpy as np
from keras import ops

REDUCTIONS = ("mean", "sum")


def gaussian_nll(teacher, mean, std, reduction="mean", mask=None):
    """Per-example negative log-likelihood of `teacher` under N(mean, std²).

    The constant `0.5 * log(2π)` is dropped, as in the paper:

        nll = reduce_{h,w,c} [ log σ_c + (t − μ)² / (2 σ_c²) ]

    Args:
        teacher: teacher features, shape `(batch, ..., channels)`.
        mean: predicted mean μ(s), the same shape as `teacher`.
        std: per-channel standard deviation σ, shape `(channels,)`.
        reduction: how the non-batch elements are reduced, `"mean"` (the
            default) or `"sum"`; anything else raises `ValueError`. `"mean"`
            averages them (so a weight of 1 suits any layer size); `"sum"`
            sums them (the paper's form).
        mask: optional padding mask for token features `(batch, tokens,
            channels)`: shape `(batch, tokens)`, true (or non-zero) at real
            tokens. Padded tokens are left out exactly: the reduction runs
            over the real tokens × channels only, their gradient is zero,
            and an example without real tokens contributes 0.

    Returns:
        A float32 tensor of shape `(batch,)`.

    Example:

    ```python
    import numpy as np
    from keras_vid.losses import gaussian_nll

    teacher = np.zeros((2, 4, 4, 3), "float32")
    mean = np.full((2, 4, 4, 3), 0.5, "float32")
    std = np.ones((3,), "float32")
    gaussian_nll(teacher, mean, std)  # [0.125, 0.125]: log 1 + 0.5² / 2
    gaussian_nll(teacher, mean, std, reduction="sum")  # [6., 6.]: 48 elements
    mask = np.array([[1, 1, 1, 0], [1, 0, 0, 0]])  # real tokens of (2, 4, 3) features
    gaussian_nll(teacher[:, 0], mean[:, 0], std, mask=mask)  # [0.125, 0.125]
    ```
    """
    if reduction not in REDUCTIONS:
        raise ValueError(
            f"`reduction` must be one of {REDUCTIONS}. Received: reduction={reduction!r}"
        )
    teacher = ops.cast(teacher, "float32")
    mean = ops.cast(mean, "float32")
    std = ops.cast(std, "float32")
    # The per-channel factors are computed once per channel, not once per
    # element: the full-size work is one subtraction, one square and one
    # product (the reduction's backward included), which is what a step pays
    # on large feature maps, where these elementwise passes are memory-bound.
    scaled_error = ops.square(teacher - mean) * (0.5 / ops.square(std))
    if mask is not None:
        mask = ops.convert_to_tensor(mask)
        if len(scaled_error.shape) != 3 or not _same_tokens(scaled_error.shape, mask.shape):
            raise ValueError(
                "gaussian_nll: a padding `mask` of shape (batch, tokens) applies to token "
                "features of shape (batch, tokens, channels). Received: teacher shape "
                f"{tuple(teacher.shape)}, mask shape {tuple(mask.shape)}"
            )
        # Mean over channels first: every real token has all its channels, so
        # the mean over real tokens of these is the mean over tokens × channels.
        per_token = ops.mean(scaled_error, axis=-1) + ops.mean(ops.log(std))
        if reduction == "sum":
            per_token = per_token * float(scaled_error.shape[-1])
        return reduce_tokens(per_token, mask, reduction)
    axes = tuple(range(1, len(scaled_error.shape)))
    if not axes:
        return scaled_error + ops.log(std)
    # log σ_c broadcast over the non-batch elements has the mean of log σ.
    log_std = ops.mean(ops.log(std))
    if reduction == "sum":
        return ops.sum(scaled_error, axis=axes) + log_std * _elements_per_example(scaled_error)
    return ops.mean(scaled_error, axis=axes) + log_std


def reduce_tokens(values, mask=None, reduction="mean"):
    """Per-example mean (or sum) of per-token values over the real tokens.

    Args:
        values: per-token values, shape `(batch, tokens)`.
        mask: `None` (every token is real) or the padding mask, shape
            `(batch, tokens)`, true (or non-zero) at real tokens.
        reduction: `"mean"` over the real tokens or `"sum"`.

    Returns:
        A float32 tensor of shape `(batch,)`. Padded tokens get a zero
        gradient (they are selected out, not multiplied by 0, so a non-finite
        value there does not leak in), and an example without real tokens
        gives 0, not NaN.

    Example:

    ```python
    import numpy as np
    from keras_vid.losses import reduce_tokens

    values = np.array([[1.0, 3.0, 9.0], [2.0, 5.0, 7.0]], "float32")
    reduce_tokens(values, mask=np.array([[1, 1, 0], [0, 0, 0]]))  # [2., 0.]
    ```
    """
    if reduction not in REDUCTIONS:
        raise ValueError(
            f"`reduction` must be one of {REDUCTIONS}. Received: reduction={reduction!r}"
        )
    values = ops.cast(values, "float32")
    if mask is not None:
        mask = ops.convert_to_tensor(mask)
    if mask is None:
        reduce = ops.sum if reduction == "sum" else ops.mean
        return reduce(values, axis=tuple(range(1, len(values.shape))))
    if len(values.shape) != 2 or not _same_tokens(values.shape, mask.shape):
        raise ValueError(
            "reduce_tokens: per-token values and the padding mask must both have shape "
            f"(batch, tokens). Received: values shape {tuple(values.shape)}, mask shape "
            f"{tuple(mask.shape)}"
        )
    real = ops.greater(ops.cast(mask, "float32"), 0.0)
    total = ops.sum(ops.where(real, values, ops.zeros_like(values)), axis=1)
    if reduction == "sum":
        return total
    count = ops.sum(ops.cast(real, "float32"), axis=1)
    return total / ops.maximum(count, 1.0)


def _same_tokens(shape, mask_shape):
    """Whether a `(batch, tokens)` mask fits `shape`'s first two axes (unknown
    sizes fit anything)."""
    return len(mask_shape) == 2 and all(
        a is None or b is None or a == b for a, b in zip(shape[:2], mask_shape)
    )


def _elements_per_example(x):
    """The number of non-batch elements of `x` (a float, or a float32 tensor
    when a non-batch dimension is only known at run time)."""
    dims = tuple(x.shape[1:])
    if all(isinstance(d, int) for d in dims):
        return float(math.prod(dims))
    return ops.cast(ops.size(x) // ops.shape(x)[0], "float32")


def softened_kl(teacher_logits, student_logits, temperature):
    """Hinton's knowledge-distillation term, per example: T² · KL(p_T ‖ p_S).

    `p_T` and `p_S` are the softmaxes of the logits divided by `temperature`.
    The T² factor keeps the gradient scale independent of the temperature.

    Args:
        teacher_logits: teacher logits, shape `(batch, num_classes)` (any
            float dtype; computed in float32).
        student_logits: student logits, the same shape as `teacher_logits`.
        temperature: softmax temperature T, a positive number (no default;
            1 is the plain softmax, Hinton et al. use values such as 4).
            Larger values soften both distributions.

    Returns:
        A float32 tensor of shape `(batch,)`, zero where the two softened
        distributions agree.

    Example:

    ```python
    import numpy as np
    from keras_vid.losses import softened_kl

    teacher = np.array([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]], "float32")
    student = np.array([[2.0, 0.0, -1.0], [1.0, 0.0, -1.0]], "float32")
    softened_kl(teacher, student, temperature=4.0)  # [0., 0.332]
    ```
    """
    teacher_logits = ops.cast(teacher_logits, "float32")
    student_logits = ops.cast(student_logits, "float32")
    teacher_log_probs = ops.log_softmax(teacher_logits / temperature, axis=-1)
    student_log_probs = ops.log_softmax(student_logits / temperature, axis=-1)
    p = ops.exp(teacher_log_probs)
    direct = ops.sum(p * (teacher_log_probs - student_log_probs), axis=-1)
    # At large T both log-softmaxes are ≈ −log C and their difference cancels
    # (0.3 % error at T = 1e3 in float32). With d = (t − s)/T centred under
    # p (e = d − Σ p·d), KL = log Σ p·exp(−e) exactly; for |e| ≤ 1 it is
    # computed as log1p(Σ p·(exp(−e) − 1 + e)), a sum of non-negative terms.
    d = (teacher_logits - student_logits) / temperature
    e = d - ops.sum(p * d, axis=-1, keepdims=True)
    small = ops.max(ops.abs(e), axis=-1) <= 1.0
    e = ops.clip(e, -1.0, 1.0)  # the other branch's values, kept finite for the gradient
    centred = ops.log1p(ops.sum(p * _exp_minus_one_plus(-e), axis=-1))
    return (temperature**2) * ops.where(small, centred, direct)


def sigmoid_kl(teacher_logits, student_logits, temperature):
    """KD for independent binary outputs, per example: T² · Σ_j KL(p_j ‖ q_j).

    `p_j = sigmoid(t_j / T)` and `q_j = sigmoid(s_j / T)` are the softened
    Bernoulli probabilities of output j (a one-logit binary classifier, or
    each label of a multi-label classifier); the KL of the joint of
    independent outputs is the sum of theirs. Computed from log-sigmoids,
    so large logits cannot overflow.

    Args:
        teacher_logits: teacher logits, shape `(batch, outputs)` (or with a
            token axis before `outputs`).
        student_logits: student logits, the same shape.
        temperature: softening temperature T > 0.

    Returns:
        A float32 tensor of shape `(batch,)` (or `(batch, tokens)`), zero
        where the two agree.

    Example:

    ```python
    import numpy as np
    from keras_vid.losses import sigmoid_kl

    sigmoid_kl(np.array([[2.0]], "float32"), np.array([[0.0]], "float32"), 1.0)
    # [0.434]: KL(Bernoulli(0.881) ‖ Bernoulli(0.5))
    ```
    """
    t = ops.cast(teacher_logits, "float32") / temperature
    s = ops.cast(student_logits, "float32") / temperature
    p = ops.sigmoid(t)
    log_p, log_not_p = ops.log_sigmoid(t), ops.log_sigmoid(-t)
    log_q, log_not_q = ops.log_sigmoid(s), ops.log_sigmoid(-s)
    kl = p * (log_p - log_q) + (1.0 - p) * (log_not_p - log_not_q)
    return (temperature**2) * ops.sum(kl, axis=-1)


def _exp_minus_one_plus(x):
    """exp(x) − 1 − x for |x| ≤ 1 without cancellation: its Taylor series
    (to x⁶, error below 3e-9 relative) for |x| < 0.1, expm1 beyond."""
    series = x * x * (1 / 2 + x * (1 / 6 + x * (1 / 24 + x * (1 / 120 + x / 720))))
    return ops.where(ops.abs(x) < 0.1, series, ops.expm1(x) - x)


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


def kd_per_example(teacher_logits, student_logits, kind, temperature, mask=None):
    """The KD term of each example: T² · KL of the softened softmaxes
    (`kind="softmax"`) or the per-output sigmoid KL (`kind="sigmoid"`, binary
    and multi-label tasks); on per-token logits, the mean over the real
    tokens of the `(batch, tokens)` `mask` (all tokens without one)."""
    term = sigmoid_kl if kind == "sigmoid" else softened_kl
    kd = term(teacher_logits, student_logits, temperature)
    if len(kd.shape) > 1:
        kd = reduce_tokens(kd, mask)
    return kd
