"""Independent NumPy implementations of the VID head, used as test oracles."""

import math

import keras
import numpy as np


def softplus(x):
    return np.logaddexp(0.0, x)


def nll(teacher, mean, std, reduction="mean"):
    """Per-example Gaussian NLL without constants, in float64."""
    teacher, mean, std = (np.asarray(a, dtype="float64") for a in (teacher, mean, std))
    per_element = np.log(std) + (teacher - mean) ** 2 / (2.0 * std**2)
    axes = tuple(range(1, per_element.ndim))
    return per_element.sum(axis=axes) if reduction == "sum" else per_element.mean(axis=axes)


def adaptive_average_pool(x, output_size):
    """PyTorch-style adaptive average pooling over the spatial axes of `x`."""
    x = np.asarray(x, dtype="float64")
    for axis, out in enumerate(output_size, start=1):
        length = x.shape[axis]
        slices = []
        for i in range(out):
            start, end = (i * length) // out, math.ceil((i + 1) * length / out)
            slices.append(np.take(x, range(start, end), axis=axis).mean(axis=axis, keepdims=True))
        x = np.concatenate(slices, axis=axis)
    return x


def token_pool(x, length, class_tokens=0, keep_class_tokens=True, grid=False):
    """`TokenPooling` in NumPy: the tokens after `class_tokens` averaged to
    `length` (runs of consecutive tokens, or square blocks with `grid`)."""
    x = np.asarray(x, dtype="float64")
    lead, patches = x[:, :class_tokens], x[:, class_tokens:]
    if length is not None and grid:
        side, out = math.isqrt(patches.shape[1]), math.isqrt(length)
        image = patches.reshape(x.shape[0], side, side, x.shape[-1])  # row-major grid
        patches = adaptive_average_pool(image, (out, out)).reshape(x.shape[0], length, -1)
    elif length is not None:
        patches = adaptive_average_pool(patches, (length,))
    return np.concatenate([lead, patches], axis=1) if keep_class_tokens else patches


def _pool(pool, x):
    if pool is None:
        return np.asarray(x, dtype="float64")
    if hasattr(pool, "output_size"):
        return adaptive_average_pool(x, pool.output_size)
    return token_pool(x, pool.length, pool.class_tokens, pool.keep_class_tokens, pool.grid)


def _layer(layer, x):
    w = [keras.ops.convert_to_numpy(v).astype("float64") for v in layer.weights]
    if isinstance(layer, (keras.layers.Conv1D, keras.layers.Conv2D)):
        kernel = w[0].reshape(w[0].shape[-2], w[0].shape[-1])
        return x @ kernel + (w[1] if len(w) > 1 else 0.0)
    if isinstance(layer, keras.layers.Dense):
        return x @ w[0] + (w[1] if len(w) > 1 else 0.0)
    if isinstance(layer, keras.layers.ReLU):
        return np.maximum(x, 0.0)
    if isinstance(
        layer, (keras.layers.GlobalAveragePooling1D, keras.layers.GlobalAveragePooling2D)
    ):
        return x.mean(axis=tuple(range(1, x.ndim - 1)))
    if isinstance(layer, keras.layers.Reshape):
        return x.reshape((x.shape[0],) + tuple(layer.target_shape))
    if isinstance(layer, keras.layers.BatchNormalization):
        gamma, beta, moving_mean, moving_var = w
        return (x - moving_mean) / np.sqrt(moving_var + layer.epsilon) * gamma + beta
    raise TypeError(f"No NumPy reference for {type(layer).__name__}")


def head_mean(head, student):
    """μ(s) of a built `VIDHead`, evaluated in NumPy (inference mode)."""
    x = _pool(head.student_pool, student)
    for layer in head.regressor:
        x = _layer(layer, x)
    return x


def head_target(head, teacher):
    """The teacher feature as a head scores it: pooled, then standardised by
    the head's current per-channel statistics when it normalises."""
    t = _pool(head.teacher_pool, teacher)
    if getattr(head, "normalize_teacher", False):
        mean = keras.ops.convert_to_numpy(head.teacher_mean).astype("float64")
        variance = keras.ops.convert_to_numpy(head.teacher_variance).astype("float64")
        t = (np.asarray(t, "float64") - mean) / np.sqrt(variance + head.STATISTICS_EPSILON)
    return t


def head_std(head):
    """σ of a built `VIDHead`: softplus(α) + ε, then the floor on σ², in float64."""
    alpha = keras.ops.convert_to_numpy(head.alpha).astype("float64")
    std = softplus(alpha) + head.epsilon
    return np.sqrt(std**2 + getattr(head, "min_variance", 0.0))


def head_nll(head, student, teacher):
    """The per-example NLL a `VIDHead` should return, from its weights."""
    std = head_std(head)
    return nll(head_target(head, teacher), head_mean(head, student), std, head.reduction)


def softened_kl(teacher_logits, student_logits, temperature):
    def log_softmax(z):
        z = z - z.max(axis=-1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))

    t = log_softmax(np.asarray(teacher_logits, "float64") / temperature)
    s = log_softmax(np.asarray(student_logits, "float64") / temperature)
    return temperature**2 * (np.exp(t) * (t - s)).sum(axis=-1)


def softened_kl_exact(teacher_logits, student_logits, temperature, digits=60):
    """T² · KL(softmax(t/T) ‖ softmax(s/T)) in `digits`-digit decimal arithmetic:
    a reference that no float cancellation touches, for large temperatures."""
    import decimal

    context = decimal.Context(prec=digits)
    T = decimal.Decimal(float(temperature))

    def log_softmax(row):
        z = [decimal.Decimal(float(v)) / T for v in row]
        total = sum((context.exp(v) for v in z), decimal.Decimal(0))
        return [context.subtract(v, context.ln(total)) for v in z]

    out = []
    for t_row, s_row in zip(np.asarray(teacher_logits), np.asarray(student_logits)):
        lt, ls = log_softmax(t_row), log_softmax(s_row)
        kl = sum((context.exp(a) * (a - b) for a, b in zip(lt, ls)), decimal.Decimal(0))
        out.append(float(kl * T * T))
    return np.array(out)
