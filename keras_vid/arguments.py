"""Checks of user arguments, shared so every one fails with the same message."""

import math
import numbers


def non_negative(value, argument, context=""):
    """`value` as a float, or a `ValueError` naming `argument` unless it is a
    finite real number ≥ 0 (booleans are refused)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
        or value < 0
    ):
        raise ValueError(f"`{argument}`{context} must be a finite number ≥ 0. Received: {value!r}")
    return float(value)


def normalize_pairs(pairs):
    if isinstance(pairs, (str, bytes)) or not isinstance(pairs, (list, tuple)):
        raise ValueError(
            "`pairs` must be a list of (student_layer_name, teacher_layer_name) tuples. "
            f"Received: pairs={pairs!r}"
        )
    normalized = []
    for pair in pairs:
        if isinstance(pair, (str, bytes)) or not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise ValueError(
                "Each entry of `pairs` must be a (student_layer_name, teacher_layer_name) "
                f"tuple. Received: {pair!r}"
            )
        pair = (pair[0], pair[1])
        if pair in normalized:
            raise ValueError(f"The pair {pair} appears twice in `pairs`.")
        normalized.append(pair)
    return normalized


def normalize_head_options(head_options, num_pairs, known):
    if head_options is None:
        return [{} for _ in range(num_pairs)]
    if isinstance(head_options, dict):
        options = [dict(head_options) for _ in range(num_pairs)]
    elif isinstance(head_options, (list, tuple)):
        if len(head_options) != num_pairs:
            raise ValueError(
                f"`head_options` has {len(head_options)} entries but there are "
                f"{num_pairs} pairs: pass one dict for all pairs or one per pair."
            )
        options = [dict(o or {}) for o in head_options]
    else:
        raise ValueError(
            f"`head_options` must be a dict or a list of dicts. Received: {head_options!r}"
        )
    for index, option in enumerate(options):
        unknown = sorted(set(option) - set(known))
        if unknown:
            raise ValueError(
                f"Unknown head option(s) {unknown} for pair {index}; "
                f"valid options are {list(known)}."
            )
    return options


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
