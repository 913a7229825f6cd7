"""Which task a compiled loss trains: it decides the label checks and the KD term.

- `"sparse"`: class indices (sparse categorical cross-entropy); labels are
  checked to lie in `[0, classes)`; KD is the softened-softmax KL.
- `"categorical"`: one-hot or soft class labels; KD is the softened-softmax KL.
- `"binary"`: one Bernoulli per output (binary cross-entropy: a one-logit
  binary classifier or multi-label classification); labels lie in `[0, 1]`;
  KD is a per-output sigmoid KL.
- `"regression"`: a distance loss (MSE, MAE, Huber...); no label check beyond
  finiteness, and no KD (there is no distribution to soften).
- `None`: a custom loss; labels pass through, and KD follows the logits: a
  softmax over several outputs, a sigmoid on one.
"""

import keras

KINDS = ("sparse", "categorical", "binary", "regression")

_BY_CLASS = (
    (keras.losses.SparseCategoricalCrossentropy, "sparse"),
    (keras.losses.CategoricalCrossentropy, "categorical"),
    (keras.losses.CategoricalFocalCrossentropy, "categorical"),
    (keras.losses.KLDivergence, "categorical"),
    (keras.losses.BinaryCrossentropy, "binary"),
    (keras.losses.BinaryFocalCrossentropy, "binary"),
    (keras.losses.MeanSquaredError, "regression"),
    (keras.losses.MeanAbsoluteError, "regression"),
    (keras.losses.MeanAbsolutePercentageError, "regression"),
    (keras.losses.MeanSquaredLogarithmicError, "regression"),
    (keras.losses.Huber, "regression"),
    (keras.losses.LogCosh, "regression"),
)

_BY_NAME = (
    ("sparse_categorical", "sparse"),
    ("categorical", "categorical"),
    ("kl_divergence", "categorical"),
    ("kld", "categorical"),
    ("binary", "binary"),
    ("mean_squared", "regression"),
    ("mean_absolute", "regression"),
    ("huber", "regression"),
    ("log_cosh", "regression"),
    ("mse", "regression"),
    ("mae", "regression"),
    ("mape", "regression"),
    ("msle", "regression"),
)


def task_kind(loss):
    """The kind of task `loss` trains (see the module docstring), or `None`
    for a loss it does not know (a custom function) or no loss."""
    for cls, kind in _BY_CLASS:
        if isinstance(loss, cls):
            return kind
    name = getattr(loss, "name", None) or getattr(loss, "__name__", None) or loss
    if not isinstance(name, str):
        return None
    name = name.lower()
    for key, kind in _BY_NAME:
        if name == key or name.startswith(key):
            return kind
    return None


def kd_kind(kind, classes):
    """Which KD term a task gets: `"softmax"`, `"sigmoid"` or `None` (none)."""
    if kind == "regression":
        return None
    if kind == "binary" or (kind is None and classes == 1):
        return "sigmoid"
    return "softmax"
