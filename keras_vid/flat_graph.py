"""`FlatGraph`: a functional model's graph with its nested models inlined.

A layer inside a functional model nested as a layer (a backbone inside a
classifier) has its output in the sub-model's own graph. To read it in the
same forward pass as the outer model's output, the outer graph is traced
again with every nested model inlined: the same layer objects, called once
each, so the weights are shared and the network still runs once per step.
"""

import weakref

import keras
from keras import tree

from keras_vid import compat

PATH_SEPARATOR = "/"


def nested_function(layer):
    """The functional graph of a nested model (Functional, or a Sequential
    built from an `Input`), or `None` for any other layer."""
    if isinstance(layer, keras.Sequential):
        return compat.sequential_graph(layer)
    if isinstance(layer, keras.Model) and compat.nodes_by_depth(layer) is not None:
        return layer
    return None


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
        model: a functional or Sequential model (any input and output
            structure: `inputs` is the model's own input structure, `outputs`
            the flat list of its outputs and `output` the first of them).

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
        self.input_tensors = list(model.inputs)
        self.inputs = model.inputs[0] if len(model.inputs) == 1 else model.input
        self.calls = []
        self._flat = {}  # id(original tensor) -> flat tensor, or None when ambiguous
        self._originals = []  # keeps the original tensors (and so their ids) alive
        self._flat_ids = set()
        self.outputs = self._trace(function, self.input_tensors, (), {})
        self.output = self.outputs[0]

    def _trace(self, function, inputs, prefix, context):
        tensors = {}
        for x, y in zip(function.inputs, inputs):
            tensors[id(x)] = y
            self._map(x, y)
        for depth in sorted(compat.nodes_by_depth(function), reverse=True):
            for node in compat.nodes_by_depth(function)[depth]:
                operation = node.operation
                if not operation or node.is_input:
                    continue
                if any(id(x) not in tensors for x in node.input_tensors):
                    continue
                args, kwargs = node.arguments.fill_in(tensors)
                for key, value in context.items():
                    if key in compat.call_context_args(operation):
                        kwargs[key] = value
                path = prefix + (operation.name,)
                inner = nested_function(operation)
                if inner is not None and args:
                    inner_context = dict(context)
                    inner_context.update(
                        {
                            k: v
                            for k, v in kwargs.items()
                            if k in compat.call_context_args(operation) and v is not None
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
        return id(tensor) in self._flat_ids or any(tensor is x for x in self.input_tensors)

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
    inputs = tree.flatten(compat.standardize_inputs(function, argument))
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


def cached_flat_graph(model):
    """The `FlatGraph` of `model` if `flat_graph` built one, else `None`."""
    return _FLAT_GRAPHS.get(model)


def flat_graph(model):
    """The `FlatGraph` of `model`, built once and cached while `model` lives."""
    graph = _FLAT_GRAPHS.get(model)
    if graph is None:
        graph = _FLAT_GRAPHS[model] = FlatGraph(model)
    return graph
