"""Finding paired layers and building one-pass feature extractors.

Layers are named by their name in the model or, inside functional models
nested as layers (a backbone inside a classifier), by a path such as
`"backbone/conv4_block6_out"`. A nested layer's output lives in the
sub-model's own graph, so extractors that read one are built on the model's
`FlatGraph` (`keras_vid.flat_graph`), so the network still runs once per
step and shares its weights with the original model.
"""

import difflib

import keras
from keras import tree

from keras_vid.flat_graph import PATH_SEPARATOR, flat_graph, nested_function

LOGITS = "logits"


def pair_key(index):
    """The extractor output key of pair `index`."""
    return f"pair_{index}"


def check_symbolic_model(model, role):
    """Raise a clear error unless `model` is a functional or Sequential
    `keras.Model` (one whose layers can be named)."""
    if not isinstance(model, keras.Model):
        raise ValueError(
            f"The {role} must be a `keras.Model`. Received: {role}={type(model).__name__}"
        )
    try:
        inputs, outputs = model.inputs, model.outputs
    except (AttributeError, ValueError):
        inputs = outputs = None
    if not inputs or not outputs:
        raise ValueError(
            f"The {role} model '{model.name}' ({type(model).__name__}) has no symbolic "
            "graph, so its intermediate layers cannot be read. Build it with the "
            "functional API or as a `keras.Sequential` that starts with `keras.Input`."
        )


def input_structure(model):
    """The model's inputs as it takes them: its own structure when it has
    several inputs or a dict of them, else its one input tensor (so a model
    built on `[x]` is still fed a bare tensor, without Keras's structure
    warning)."""
    if len(model.inputs) > 1:
        return model.input
    try:
        structure = model.input
    except (AttributeError, ValueError):  # a Sequential that was never called
        return model.inputs[0]
    return structure if isinstance(structure, dict) else model.inputs[0]


def _path_text(path):
    return "".join(f"[{key!r}]" for key in path) or "the input"


def _structure_text(structure):
    return str(tree.map_structure(lambda x: (None,) + tuple(x.shape[1:]), structure)).replace(
        "'", ""
    )


def _check_input_pair(teacher, student, t_in, s_in, where):
    t_shape, s_shape = tuple(t_in.shape[1:]), tuple(s_in.shape[1:])
    compatible = len(t_shape) == len(s_shape) and all(
        a is None or b is None or a == b for a, b in zip(t_shape, s_shape)
    )
    at = "" if where is None else f" at {where}"
    if not compatible:
        raise ValueError(
            f"The teacher and the student must take the same input shape{at}. Received: "
            f"teacher '{teacher.name}' input shape {(None,) + t_shape}, student "
            f"'{student.name}' input shape {(None,) + s_shape}."
        )
    if t_in.dtype != s_in.dtype:
        raise ValueError(
            f"The teacher and the student must take the same input dtype{at}. Received: "
            f"teacher '{teacher.name}' input dtype {t_in.dtype}, student "
            f"'{student.name}' input dtype {s_in.dtype}."
        )


def check_same_inputs(teacher, student):
    """The batch's `x` feeds both models, so their inputs must agree.

    The rule: the same structure (one tensor, a list, a dict, nested) with
    the same shape and dtype at every place, or, for dict inputs, the
    student's keys a subset of the teacher's (the student reads only those
    entries of `x`). Returns the student's keys in the subset case (the
    entries of `x` to pass to the student), else `None`.
    """
    single = len(teacher.inputs) == 1 and len(student.inputs) == 1
    t_struct, s_struct = input_structure(teacher), input_structure(student)
    if single:
        _check_input_pair(teacher, student, teacher.inputs[0], student.inputs[0], None)
        return None
    if isinstance(t_struct, dict) and isinstance(s_struct, dict):
        missing = [key for key in s_struct if key not in t_struct]
        if missing:
            raise ValueError(
                f"The student '{student.name}' reads the input key {missing[0]!r}, which the "
                f"teacher '{teacher.name}' does not take. The batch's x feeds both models, "
                "so the student's dict inputs must be the teacher's or a subset of them "
                f"(by key). Received: teacher input keys {sorted(t_struct)}, student "
                f"input keys {sorted(s_struct)}."
            )
        for key in s_struct:
            _check_input_pair(teacher, student, t_struct[key], s_struct[key], f"key {key!r}")
        return None if set(s_struct) == set(t_struct) else list(s_struct)
    try:
        tree.assert_same_structure(t_struct, s_struct)
    except (TypeError, ValueError):
        raise ValueError(
            "The teacher and the student must take the same input structure (the batch's "
            "x feeds both), or the student a subset of the teacher's dict inputs, by key. "
            f"Received: teacher '{teacher.name}' inputs {_structure_text(t_struct)}, "
            f"student '{student.name}' inputs {_structure_text(s_struct)}."
        ) from None
    for (path, t_in), (_, s_in) in zip(
        tree.flatten_with_path(t_struct), tree.flatten_with_path(s_struct)
    ):
        _check_input_pair(teacher, student, t_in, s_in, _path_text(path))
    return None


def output_index(model, output, role, argument):
    """The index in `model.outputs` of the logits output chosen by `output`:
    `None` (the model's single output), an output name (a dict key of the
    model's outputs, or the name of the layer that produces it) or an index."""
    count = len(model.outputs)
    if output is None and count == 1:
        return 0
    # A Sequential has no `output_names`: its output is its last layer's.
    names = list(getattr(model, "output_names", None) or [model.layers[-1].name])
    structure = model.output
    if isinstance(structure, dict):
        # `model.outputs` follows the sorted keys, as `keras.tree.flatten`.
        keys = [path[0] for path, _ in tree.flatten_with_path(structure)]
    else:
        keys = []
    if output is None:
        raise ValueError(
            f"The {role} model '{model.name}' has {count} outputs ({keys or names}); "
            f"choose its logits with `{argument}=` (an output name or index). "
            f"Received: {argument}=None"
        )
    if isinstance(output, bool) or not isinstance(output, (int, str)):
        raise ValueError(
            f"`{argument}` must be an output name (str) or index (int). "
            f"Received: {argument}={output!r}"
        )
    if isinstance(output, int):
        if not -count <= output < count:
            raise ValueError(
                f"`{argument}` is out of range: the {role} model '{model.name}' has "
                f"{count} output(s). Received: {argument}={output}"
            )
        return output % count
    for candidates in (keys, names):
        if output in candidates:
            return candidates.index(output)
    raise ValueError(
        f"The {role} model '{model.name}' has no output named {output!r}. Its outputs: "
        f"{keys or names}"
        + (f" (layers {names})" if keys and keys != names else "")
        + f". Received: {argument}={output!r}"
    )


def _layer_names(model):
    return [layer.name for layer in model.layers]


def layer_paths(model, prefix=""):
    """`(path, layer)` for every layer of `model`, entering functional or
    Sequential models nested as layers (`"backbone/conv1"`)."""
    for layer in model.layers:
        path = f"{prefix}{layer.name}"
        yield path, layer
        if nested_function(layer) is not None:
            yield from layer_paths(layer, path + PATH_SEPARATOR)


def check_no_shared_layers(teacher, student):
    """A layer in both models would be frozen with the teacher and never
    train in the student: refuse it, naming the layer."""
    teacher_weights = {id(w) for w in teacher.weights}
    shared = [
        path
        for path, layer in layer_paths(student)
        if nested_function(layer) is None and any(id(w) in teacher_weights for w in layer.weights)
    ]
    if shared:
        raise ValueError(
            f"The teacher '{teacher.name}' and the student '{student.name}' share the "
            f"layer(s) {shared}: the teacher is frozen, so a shared layer would never "
            "train in the student. Give the student its own layers (e.g. clone the "
            "teacher's with `keras.models.clone_model`)."
        )


def _missing(model, name, role, path=None):
    names = _layer_names(model)
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.5)
    if path is None:
        nested = [p for p, _ in layer_paths(model) if p.split(PATH_SEPARATOR)[-1] == name]
        if nested:
            return ValueError(
                f"The {role} model '{model.name}' has no top-level layer named '{name}'; "
                f"it is inside a nested model: name it by its path, {nested[0]!r}"
                + (f" (other calls: {nested[1:]})." if len(nested) > 1 else ".")
            )
        hint = f" Close matches: {close}." if close else f" Its layers: {names[:30]}."
        return ValueError(f"The {role} model '{model.name}' has no layer named '{name}'.{hint}")
    hint = f" Close matches at that level: {close}." if close else f" Its layers: {names[:30]}."
    return ValueError(
        f"The {role} layer path '{path}' cannot be followed: model '{model.name}' "
        f"has no layer named '{name}'.{hint}"
    )


def find_layer(model, name, role):
    """The layer called `name` in `model`, or at the path `"a/b/name"`.

    A plain name is looked up with `model.get_layer`. A path walks through
    functional sub-models used as layers, one name per level. Errors list
    the close matches at the level where the name is missing.

    Example:

    ```python
    find_layer(classifier, "backbone/conv4_block6_out", "teacher")
    ```
    """
    if not isinstance(name, str):
        raise ValueError(
            f"Layer names in `pairs` must be strings. Received {name!r} for the {role}."
        )
    names = _layer_names(model)
    if name in names or PATH_SEPARATOR not in name:
        if name not in names:
            raise _missing(model, name, role)
        return model.get_layer(name)
    parts = name.split(PATH_SEPARATOR)
    if not all(parts):
        raise ValueError(
            f"The {role} layer path '{name}' has an empty component; write it as "
            "'submodel/layer' (e.g. 'backbone/conv4_block6_out')."
        )
    current, walked = model, []
    for depth, part in enumerate(parts):
        if depth > 0 and nested_function(current) is None:
            raise ValueError(
                f"The {role} layer path '{name}' goes inside "
                f"'{PATH_SEPARATOR.join(walked)}', a {type(current).__name__} layer, "
                "but only functional or Sequential models nested as layers can be "
                "entered by a path."
            )
        if part not in _layer_names(current):
            raise _missing(current, part, role, name)
        current = current.get_layer(part)
        walked.append(part)
    return current


def layer_output(layer, model, role):
    """The symbolic output of `layer` (from `find_layer`) inside `model`'s graph.

    For a layer of a nested sub-model this is its output in the flat graph
    of `model` (see `FlatGraph`), so `feature_extractor` can read it without
    running the sub-model a second time.
    """
    if not any(layer is own for own in model.layers):
        output = flat_graph(model).output_of(layer, role)
    elif sum(call.layer is layer for call in flat_graph(model).calls) > 1:
        output = flat_graph(model).output_of(layer, role)  # raises: called several times
    else:
        try:
            output = layer.output
        except (AttributeError, ValueError) as error:
            raise ValueError(
                f"Cannot read the output of {role} layer '{layer.name}' in model "
                f"'{model.name}': {error}"
            ) from None
    if isinstance(output, (list, tuple, dict)):
        raise ValueError(
            f"The {role} layer '{layer.name}' has several outputs; pair a layer with "
            "a single tensor output."
        )
    return output


def check_channels_last(layer, output, role, name):
    """Refuse a paired map whose channels are not on the last axis: the head
    would learn one σ² per column of the map instead of one per channel."""
    if getattr(layer, "data_format", None) == "channels_first" and len(output.shape) >= 3:
        raise ValueError(
            f"The {role} layer '{name}' is channels-first (data_format='channels_first', "
            f"output shape {tuple(output.shape)}), but VID heads read channels on the last "
            "axis. Pair a channels-last layer, or move the channels last after it, e.g. "
            f"`keras.layers.Permute((2, 3, 1))` on a 4-D map, and pair that layer."
        )


def check_feature_trains(model, output, name, role="student"):
    """Refuse a student feature computed without any trainable weight (the
    input itself, or a parameter-free transform of it): the pair's gradient
    would train its head alone and never reach the student."""
    try:
        upstream = keras.Model(model.inputs, output)
    except (ValueError, TypeError, AttributeError):  # e.g. a nested model's inner tensor
        return
    if not upstream.trainable_weights:
        raise ValueError(
            f"The {role} layer '{name}' has no trainable layer before it (it is an input, "
            "or computed from the inputs by layers without trainable weights), so a VID "
            f"pair on it would train only its head, never the {role}. Pair a layer that "
            "comes after a trainable one."
        )


def select_inputs(x, keys, student_name):
    """The entries of the batch's `x` a student reads: all of them (`keys`
    is `None`), or, for a student on a subset of the teacher's dict inputs,
    those `keys`."""
    if keys is None:
        return x
    if not isinstance(x, dict):
        raise ValueError(
            f"The student '{student_name}' reads the inputs {keys} of x by key, so x "
            f"must be a dict. Received: x of type {type(x).__name__}"
        )
    return {key: x[key] for key in keys}
