"""One-pass feature extractors: a model's logits and paired features from one call.

The distiller runs each model once per step through its extractor, a
functional model on the same layers (and weights) that returns a dict
`{"logits": ..., "pair_<k>": ..., "<key>_mask": ...}`.
"""

import warnings

import keras

from keras_vid import compat
from keras_vid.features import LOGITS, input_structure
from keras_vid.flat_graph import cached_flat_graph, flat_graph


def final_softmax(model, output=0):
    """The name of the layer that ends `model`'s output number `output` in a
    softmax (a `Softmax` layer, or any layer with `activation="softmax"`, as
    `keras.applications` classifiers by default), or `None`."""
    graph = flat_graph(model)
    target = graph.outputs[output]
    for call in reversed(graph.calls):
        if any(t is target for t in call.outputs):
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


def mask_key(key):
    """The extractor output key of the Keras mask of output `key`."""
    return f"{key}_mask"


def feature_extractor(model, features, name, softmax_output=False, output=0, masks=()):
    """A functional model that returns `{"logits": ..., key: feature, ...}`.

    One call yields the model's logits (its output number `output`) and
    every paired feature, so the network runs once per step. Dict outputs
    avoid the one-element-list pitfall (a bare tensor iterated over the batch
    on JAX and PyTorch). It takes the model's one input tensor, or the
    model's own input structure (dict, list, nested) when it has several.
    When a feature comes from a nested model (a path in `pairs`), the
    extractor is built on the model's `FlatGraph`, logits included, so the
    nested model is not run a second time. With `softmax_output`, the logits
    and any feature that is them are returned as `log_probabilities` (logits
    for KD and VID-LP). For every key in `masks` (`"logits"` or a feature
    key) the Keras mask that output carries is returned too, under
    `mask_key(key)`.
    """
    logits = model.outputs[output]
    graph = cached_flat_graph(model)
    if graph is not None and any(graph.owns(t) for t in features.values()):
        features = {key: graph.flat(t) for key, t in features.items()}
        logits = graph.outputs[output]
    source = logits
    if softmax_output:
        logits = log_probabilities(logits)
    outputs = {LOGITS: logits}
    outputs.update({key: logits if t is source else t for key, t in features.items()})
    tensors = dict(features, **{LOGITS: source})
    outputs.update({mask_key(key): compat.keras_mask(tensors[key]) for key in masks})
    return keras.Model(input_structure(model), outputs, name=name)


def build_extractors(teacher, student, t_index, s_index, features, masks, owner):
    """The student's and the teacher's extractors for the paired `features`
    (`(student_features, teacher_features)`, dicts keyed by extractor key)
    and the `TokenMasks` `masks`; warns when the teacher ends in a softmax
    (its log-probabilities then stand for its logits)."""
    student_features, teacher_features = features
    student_extractor = feature_extractor(
        student, student_features, f"{student.name}_vid_features",
        output=s_index, masks=masks.extracted_by("student"),
    )  # fmt: skip
    teacher_softmax = final_softmax(teacher, t_index)
    if teacher_softmax is not None:
        warnings.warn(
            f"The teacher '{teacher.name}' ends in a softmax (layer "
            f"'{teacher_softmax}'): {owner} uses its log-probabilities as the "
            "teacher's logits (the same softmax at every temperature) for KD and "
            "for pairs on that layer. Build the teacher without it (e.g. "
            "`classifier_activation=None`) to silence this.",
            stacklevel=4,
        )
    teacher_extractor = feature_extractor(
        teacher, teacher_features, f"{teacher.name}_vid_features",
        softmax_output=teacher_softmax is not None, output=t_index,
        masks=masks.extracted_by("teacher"),
    )  # fmt: skip
    return student_extractor, teacher_extractor
