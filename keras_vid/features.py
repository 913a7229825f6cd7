"""Finding paired layers and building one-pass feature extractors."""

import difflib

import keras

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


def find_layer(model, name, role):
    """`model.get_layer(name)`, with close matches listed when it is missing."""
    if not isinstance(name, str):
        raise ValueError(
            f"Layer names in `pairs` must be strings. Received {name!r} for the {role}."
        )
    names = [layer.name for layer in model.layers]
    if name not in names:
        close = difflib.get_close_matches(name, names, n=5, cutoff=0.5)
        hint = f" Close matches: {close}." if close else f" Its layers: {names[:30]}."
        raise ValueError(f"The {role} model '{model.name}' has no layer named '{name}'.{hint}")
    return model.get_layer(name)


def layer_output(layer, model, role):
    """The symbolic output of `layer` inside `model`'s graph."""
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


def feature_extractor(model, features, name):
    """A functional model that returns `{"logits": ..., key: feature, ...}`.

    One call yields the model's output and every paired feature, so the
    network runs once per step. Dict outputs avoid the one-element-list
    pitfall (a bare tensor iterated over the batch on JAX and PyTorch).
    """
    outputs = {LOGITS: model.outputs[0]}
    outputs.update(features)
    return keras.Model(model.inputs[0], outputs, name=name)
