"""Finding paired layers and building one-pass feature extractors.

Layers are named by their name in the model or, inside functional models
nested as layers (a backbone inside a classifier), by a path such as
`"backbone/conv4_block6_out"`. A nested layer's output lives in the
sub-model's own graph, so extractors that read one are built on a flat copy
of the model's graph (`FlatGraph`): the same layer objects called once each,
nested models inlined, so the network still runs once per step and shares
its weights with the original model.
"""

import difflib
import weakref

import keras
from keras import tree

LOGITS = "logits"
PATH_SEPARATOR = "/"


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


def nested_function(layer):
    """The functional graph of a nested model (Functional, or a Sequential
    built from an `Input`), or `None` for any other layer."""
    if isinstance(layer, keras.Sequential):
        return getattr(layer, "_functional", None)
    if isinstance(layer, keras.Model) and hasattr(layer, "_nodes_by_depth"):
        return layer
    return None


def _layer_names(model):
    return [layer.name for layer in model.layers]


def _missing(model, name, role, path=None):
    names = _layer_names(model)
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.5)
    if path is None:
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


class LayerCall:
    """One call of a layer in a `FlatGraph`: its path, the layer, and the
    flat graph's input and output tensors of that call."""

    def __init__(self, path, layer, inputs, outputs):
        self.path = path
        self.layer = layer
        self.inputs = inputs
        self.outputs = outputs

    def __repr__(self):
        return f"LayerCall({self.path!r})"


class FlatGraph:
    """The graph of a functional model with its nested models inlined.

    Every layer call of `model`, and of the functional or Sequential models
    it uses as layers (at any depth), is made again on the flat graph's
    tensors, in topological order; `calls` lists them. The layer objects are the model's own, so
    the weights are shared, and a model built from `inputs` to `output`
    computes the same function as `model` (call-context arguments such as
    `training=False` on a nested model's call are passed to its layers, as
    the nested model would; masks are not propagated across an inlined
    model's boundary).

    Args:
        model: a single-input, single-output functional or Sequential model.

    Example:

    ```python
    graph = FlatGraph(classifier)
    feature = graph.output_of(classifier.get_layer("backbone").get_layer("c4"))
    model = keras.Model(graph.inputs, [graph.output, feature])  # one pass
    ```
    """

    def __init__(self, model):
        function = nested_function(model)
        if function is None:
            raise ValueError(
                f"Model '{model.name}' ({type(model).__name__}) has no functional graph to "
                "flatten."
            )
        self.model = model
        self.inputs = model.inputs[0]
        self.calls = []
        self._flat = {}  # id(original tensor) -> flat tensor, or None when ambiguous
        self._originals = []  # keeps the original tensors (and so their ids) alive
        self._flat_ids = set()
        outputs = self._trace(function, [self.inputs], (), {})
        self.output = outputs[0]

    def _trace(self, function, inputs, prefix, context):
        tensors = {}
        for x, y in zip(function.inputs, inputs):
            tensors[id(x)] = y
            self._map(x, y)
        for depth in sorted(function._nodes_by_depth, reverse=True):
            for node in function._nodes_by_depth[depth]:
                operation = node.operation
                if not operation or node.is_input:
                    continue
                if any(id(x) not in tensors for x in node.input_tensors):
                    continue
                args, kwargs = node.arguments.fill_in(tensors)
                for key, value in context.items():
                    if key in getattr(operation, "_call_context_args", {}):
                        kwargs[key] = value
                path = prefix + (operation.name,)
                inner = nested_function(operation)
                if inner is not None and args:
                    inner_context = dict(context)
                    inner_context.update(
                        {
                            k: v
                            for k, v in kwargs.items()
                            if k in getattr(operation, "_call_context_args", {}) and v is not None
                        }
                    )
                    inner_inputs = _inner_inputs(inner, args[0])
                    outputs = self._trace(inner, inner_inputs, path, inner_context)
                else:
                    outputs = tree.flatten(operation(*args, **kwargs))
                    self.calls.append(
                        LayerCall(PATH_SEPARATOR.join(path), operation, node_inputs(args), outputs)
                    )
                    self._flat_ids.update(id(y) for y in outputs)
                for x, y in zip(node.outputs, tree.flatten(outputs)):
                    tensors[id(x)] = y
                    self._map(x, y)
        return [tensors[id(x)] for x in function.outputs]

    def _map(self, original, flat):
        key = id(original)
        if key in self._flat and self._flat[key] is not flat:
            self._flat[key] = None  # a nested model called more than once
        else:
            self._flat[key] = flat
            self._originals.append(original)

    def owns(self, tensor):
        """Whether `tensor` is one of this flat graph's tensors."""
        return id(tensor) in self._flat_ids or tensor is self.inputs

    def flat(self, tensor, role="model"):
        """The flat graph's tensor for a tensor of the original (outer or nested) graph."""
        if self.owns(tensor):
            return tensor
        flat = self._flat.get(id(tensor))
        if flat is None:
            raise ValueError(
                f"Cannot map a tensor of the {role} model '{self.model.name}' onto its "
                "flat graph: it is not in the graph, or it belongs to a nested model "
                "that is called more than once."
            )
        return flat

    def output_of(self, layer, role="model"):
        """The flat output of `layer`, which must be called exactly once."""
        calls = [call for call in self.calls if call.layer is layer]
        if len(calls) != 1:
            reason = (
                "is not called in its graph"
                if not calls
                else f"is called {len(calls)} times ({[c.path for c in calls]})"
            )
            raise ValueError(
                f"Cannot pair the {role} layer '{layer.name}' of model "
                f"'{self.model.name}': it {reason}; pair a layer called once."
            )
        outputs = calls[0].outputs
        return outputs[0] if len(outputs) == 1 else outputs


def _inner_inputs(function, argument):
    standardize = getattr(function, "_standardize_inputs", None)
    inputs = tree.flatten(standardize(argument) if standardize else argument)
    if len(inputs) != len(function.inputs):
        raise ValueError(
            f"Cannot inline the nested model '{function.name}': it has "
            f"{len(function.inputs)} inputs but was called on {len(inputs)} tensors."
        )
    return inputs


def node_inputs(args):
    """The tensors among a call's positional arguments, flattened."""
    return [x for x in tree.flatten(args) if isinstance(x, keras.KerasTensor)]


_FLAT_GRAPHS = weakref.WeakKeyDictionary()


def flat_graph(model):
    """The `FlatGraph` of `model`, built once and cached while `model` lives."""
    graph = _FLAT_GRAPHS.get(model)
    if graph is None:
        graph = _FLAT_GRAPHS[model] = FlatGraph(model)
    return graph


def feature_extractor(model, features, name):
    """A functional model that returns `{"logits": ..., key: feature, ...}`.

    One call yields the model's output and every paired feature, so the
    network runs once per step. Dict outputs avoid the one-element-list
    pitfall (a bare tensor iterated over the batch on JAX and PyTorch).
    When a feature comes from a nested model (a path in `pairs`), the
    extractor is built on the model's `FlatGraph`, logits included, so the
    nested model is not run a second time.
    """
    graph = _FLAT_GRAPHS.get(model)
    if graph is not None and any(graph.owns(t) for t in features.values()):
        outputs = {LOGITS: graph.output}
        outputs.update({key: graph.flat(t) for key, t in features.items()})
        return keras.Model(graph.inputs, outputs, name=name)
    outputs = {LOGITS: model.outputs[0]}
    outputs.update(features)
    return keras.Model(model.inputs[0], outputs, name=name)
