"""Checks of the data given to `fit` and `evaluate`, before the first step.

Everything here runs once per call, on the host, on what the user passed:
empty data, label arrays and dataset label specs the compiled loss cannot
take, a teacher made trainable again. What must be checked on every batch
inside the compiled step is `keras_vid.step_guard.StepGuard`.
"""

import contextlib
import inspect
import warnings

import keras
import numpy as np
from keras import tree

FIT_SIGNATURE = inspect.signature(keras.Model.fit)

NO_BATCHES = (
    "`{method}()` received an empty dataset: it yielded no batch, so there is nothing "
    "to train or evaluate on. Check the data split or the dataset's filters."
)


@contextlib.contextmanager
def no_batches_error(method):
    """An empty dataset of unknown length ends JAX's loop with a bare
    `StopIteration`: say what it means."""
    try:
        yield
    except StopIteration:
        raise ValueError(NO_BATCHES.format(method=method)) from None


def check_fit_data(distiller, arguments):
    """The checks before `fit`, on its bound `arguments`: data not empty,
    labels (training and validation) the compiled loss takes, and the teacher
    still frozen."""
    x, y, guard = arguments.get("x"), arguments.get("y"), distiller.step_guard
    check_not_empty(x, "fit")
    check_label_array(guard, y, "fit")
    check_dataset_labels(x, "fit")
    validation = arguments.get("validation_data")
    if isinstance(validation, (tuple, list)) and len(validation) >= 2:
        check_label_array(guard, validation[1], "fit", "validation_data")
    elif validation is not None:
        check_dataset_labels(validation, "fit", "validation_data")
    keep_teacher_frozen(distiller)


def check_evaluate_data(distiller, x, y):
    check_not_empty(x, "evaluate")
    check_label_array(distiller.step_guard, y, "evaluate")
    check_dataset_labels(x, "evaluate")


def keep_teacher_frozen(distiller):
    """Freeze the teacher again if it was made trainable after construction:
    with trainable teacher weights the optimizer would track them, and a
    decoupled weight decay would move them although no gradient reaches
    them."""
    teacher = distiller.teacher
    if teacher.trainable_weights:
        warnings.warn(
            f"The teacher '{teacher.name}' was made trainable after it was "
            f"given to {distiller.name}; the teacher of a distiller stays frozen (its "
            "weights and BatchNorm statistics are not trained). Setting "
            "`teacher.trainable = False` again.",
            stacklevel=4,
        )
        teacher.trainable = False


def check_label_array(rules, y, method, argument="labels"):
    """Label arrays checked up front (the step checks tensors): a
    `ValueError` naming `method` (and `argument`, e.g. `validation_data`)
    for string labels, class indices outside the classes, float class
    indices that are not whole numbers (with a sparse loss), and binary
    labels outside [0, 1] (with a binary loss). `rules` is the distiller's
    `StepGuard` (`classes`, `sparse_labels`, `binary_labels`)."""
    where = "" if argument == "labels" else f" in `{argument}`"
    if isinstance(y, dict):
        raise ValueError(_dict_labels(method, where, list(y)))
    if y is None or not hasattr(y, "dtype") or isinstance(y, (list, tuple)):
        return
    labels = np.asarray(y)
    if labels.dtype.kind in "USO":
        raise ValueError(
            f"`{method}()` received{where} labels of dtype {labels.dtype} (strings or "
            f"objects, e.g. {labels.reshape(-1)[:3].tolist()}): labels must be numbers. "
            "Map class names to integer indices first (e.g. with "
            "`keras.layers.StringLookup(num_oov_indices=0)`)."
        )
    numeric = labels[np.isfinite(labels)] if labels.dtype.kind == "f" else labels
    if rules.binary_labels and numeric.size and (numeric.min() < 0 or numeric.max() > 1):
        raise ValueError(
            f"`{method}()` received{where} labels in [{numeric.min()}, {numeric.max()}], "
            "but the loss is a binary cross-entropy: each label is the probability of "
            "its output being 1 and must lie in [0, 1]."
        )
    sparse = labels.ndim == 1 or (labels.ndim == 2 and labels.shape[-1] == 1)
    integer = np.issubdtype(labels.dtype, np.integer)
    floating = np.issubdtype(labels.dtype, np.floating)
    if (
        rules.classes is None
        or not rules.sparse_labels
        or not sparse
        or not (integer or floating)
        or not labels.size
    ):
        return
    if floating:
        finite = labels[np.isfinite(labels)]  # NaN labels: the step guard skips the batch
        fractional = finite[finite != np.floor(finite)]
        if fractional.size:
            raise ValueError(
                f"`{method}()` received float class labels that are not whole numbers "
                f"(e.g. {fractional[:3].tolist()}): a sparse loss would truncate them "
                "to a wrong class. Pass integer class indices."
            )
        labels = finite
        if not labels.size:
            return
    if labels.min() < 0 or labels.max() >= rules.classes:
        raise ValueError(
            f"`{method}()` received{where} labels in [{labels.min()}, {labels.max()}], "
            f"but the student has {rules.classes} output classes: integer labels must lie in "
            f"[0, {rules.classes})."
        )


def check_dataset_labels(dataset, method, argument="labels"):
    """String labels in a `tf.data.Dataset`, refused before the first step
    (they would fail inside the backend's tree utilities)."""
    spec = getattr(dataset, "element_spec", None)
    if not isinstance(spec, tuple) or len(spec) < 2:
        return
    if isinstance(spec[1], dict):
        where = "" if argument == "labels" else f" as `{argument}`"
        raise ValueError(_dict_labels(method, where, list(spec[1]), dataset=True))
    for label in tree.flatten(spec[1]):
        if getattr(getattr(label, "dtype", None), "name", None) == "string":
            where = "" if argument == "labels" else f" as `{argument}`"
            raise ValueError(
                f"`{method}()` received{where} a dataset whose labels are strings "
                f"({label}): labels must be numbers. Map class names to integer "
                "indices first (e.g. with `keras.layers.StringLookup(num_oov_indices=0)`)."
            )


def _dict_labels(method, where, keys, dataset=False):
    source = "a dataset whose labels are" if dataset else "labels as"
    return (
        f"`{method}()` received{where} {source} a dict keyed by {keys}. A distiller "
        "computes its task loss on one output of the student (its logits, or the one "
        "`student_output` names), so it takes that output's labels as one array or "
        "tensor: pass `y[<name>]` (map the dataset with `lambda x, y: (x, y[<name>])`)."
    )


def check_not_empty(x, method):
    """Arrays with no examples, and datasets that yield no batch (a
    `tf.data.Dataset` of cardinality 0, or of unknown cardinality whose
    first element does not come, a `PyDataset` or `DataLoader` of length 0),
    fail differently on each backend; fail clearly."""
    if isinstance(x, (dict, list, tuple)):  # the inputs of a multi-input model
        arrays = [leaf for leaf in _leaves(x) if getattr(leaf, "shape", None) is not None]
        if arrays:
            x = arrays[0]
    shape = getattr(x, "shape", None)
    if shape is not None and len(shape) > 0 and shape[0] == 0:
        raise ValueError(
            f"`{method}()` received an input with 0 examples (shape {tuple(shape)}): "
            "there is nothing to train or evaluate on."
        )
    if shape is None and x is not None:
        if _yields_nothing(x):
            raise ValueError(
                f"`{method}()` received an empty dataset ({type(x).__name__} with 0 "
                "batches): there is nothing to train or evaluate on. Check the data split "
                "or the dataset's filters."
            )


def _leaves(structure):
    if isinstance(structure, dict):
        for value in structure.values():
            yield from _leaves(value)
    elif isinstance(structure, (list, tuple)):
        for value in structure:
            yield from _leaves(value)
    else:
        yield structure


def _yields_nothing(dataset):
    """Whether a dataset will yield no batch, where that can be known up front."""
    cardinality = getattr(dataset, "cardinality", None)
    if callable(cardinality) and hasattr(dataset, "element_spec"):  # tf.data
        try:
            count = int(cardinality())
        except (TypeError, ValueError):
            return False
        if count == -2:  # unknown (after a filter): look at the first element only
            return not any(True for _ in dataset.take(1))
        return count == 0  # -1 is infinite
    if hasattr(dataset, "__len__") and not isinstance(dataset, (dict, list, tuple)):
        try:
            return len(dataset) == 0
        except (TypeError, NotImplementedError):
            return False
    return False
