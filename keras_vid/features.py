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

from keras_vid.flat_graph import PATH_SEPARATOR, cached_flat_graph, flat_graph, nested_function

LOGITS = "logits"


def pair_key(index):
    """The extractor output key of pair `index`."""
    return f"pair_{index}"


def check_symbolic_model(model, role):
    """Raise a clear error unless `model` is a single-input, single-output
    functional or Sequential `keras.Model` (one whose layers can be named)."""
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
    if len(inputs) != 1 or len(outputs) != 1:
        raise ValueError(
            f"The {role} model '{model.name}' has {len(inputs)} inputs and "
            f"{len(outputs)} outputs; VIDDistiller needs exactly one of each "
            "(the output being the logits)."
        )


def check_same_inputs(teacher, student):
    """The teacher and student read the same batch, so their inputs must agree."""
    t_in, s_in = teacher.inputs[0], student.inputs[0]
    t_shape, s_shape = tuple(t_in.shape[1:]), tuple(s_in.shape[1:])
    compatible = len(t_shape) == len(s_shape) and all(
        a is None or b is None or a == b for a, b in zip(t_shape, s_shape)
    )
    if not compatible:
        raise ValueError(
            "The teacher and the student must take the same input shape. Received: "
            f"teacher '{teacher.name}' input shape {(None,) + t_shape}, student "
            f"'{student.name}' input shape {(None,) + s_shape}."
        )
    if t_in.dtype != s_in.dtype:
        raise ValueError(
            "The teacher and the student must take the same input dtype. Received: "
            f"teacher '{teacher.name}' input dtype {t_in.dtype}, student "
            f"'{student.name}' input dtype {s_in.dtype}."
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


def final_softmax(model):
    """The name of the layer that ends `model` in a softmax (a `Softmax`
    layer, or any layer with `activation="softmax"`, as `keras.applications`
    classifiers by default), or `None`."""
    graph = flat_graph(model)
    for call in reversed(graph.calls):
        if any(output is graph.output for output in call.outputs):
            layer = call.layer
            activation = getattr(getattr(layer, "activation", None), "__name__", None)
            if isinstance(layer, keras.layers.Softmax) or activation == "softmax":
                return call.path
            return None
    return None


def log_probabilities(probabilities):
    """Logits of a softmax output: log p = z − logsumexp(z), which has the same
    softmax at every temperature. Probabilities that underflowed to 0 become
    log of the smallest normal float32 (about −87)."""
    p = keras.ops.cast(probabilities, "float32")
    return keras.ops.log(keras.ops.maximum(p, 1.1754944e-38))


def feature_extractor(model, features, name, softmax_output=False):
    """A functional model that returns `{"logits": ..., key: feature, ...}`.

    One call yields the model's output and every paired feature, so the
    network runs once per step. Dict outputs avoid the one-element-list
    pitfall (a bare tensor iterated over the batch on JAX and PyTorch).
    When a feature comes from a nested model (a path in `pairs`), the
    extractor is built on the model's `FlatGraph`, logits included, so the
    nested model is not run a second time. With `softmax_output`, the
    model's output and any feature that is it are returned as
    `log_probabilities` (logits for KD and VID-LP).
    """
    output = model.outputs[0]
    graph = cached_flat_graph(model)
    if graph is not None and any(graph.owns(t) for t in features.values()):
        inputs, logits = graph.inputs, graph.output
        features = {key: graph.flat(t) for key, t in features.items()}
        output = graph.output
    else:
        inputs, logits = model.inputs[0], output
    if softmax_output:
        logits = log_probabilities(logits)
    outputs = {LOGITS: logits}
    outputs.update({key: logits if t is output else t for key, t in features.items()})
    return keras.Model(inputs, outputs, name=name)
