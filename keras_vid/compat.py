"""Every use of a private Keras, TensorFlow or PyTorch API, one function each.

TensorFlow and PyTorch are imported inside the one function that needs each
(called only by that backend's trainer), so importing this module loads
neither.

keras_vid needs a few internals that no public API offers. They are read
here and nowhere else, so a Keras upgrade that moves one breaks one
function, and `tests/test_compat.py` (one test per function) says which.
"""

import keras
from keras.src.losses import loss as keras_loss


def optimizer_variable_key(optimizer, variable):
    """The key an optimizer files `variable` under (`Optimizer._var_key`)."""
    return optimizer._var_key(variable)


def weight_decay_exclusions(optimizer):
    """The variable keys and the name pattern excluded from the optimizer's
    weight decay (`_exclude_from_weight_decay`, `..._pattern`)."""
    keys = set(getattr(optimizer, "_exclude_from_weight_decay", None) or ())
    return keys, getattr(optimizer, "_exclude_from_weight_decay_pattern", None)


def add_weight_decay_exclusions(optimizer, variables):
    """Exclude `variables` from the optimizer's weight decay, keeping what
    was excluded before (the public `exclude_from_weight_decay` replaces it)."""
    keys, pattern = weight_decay_exclusions(optimizer)
    optimizer.exclude_from_weight_decay(var_list=variables)
    optimizer._exclude_from_weight_decay |= keys
    optimizer._exclude_from_weight_decay_pattern = pattern


def loss_tracker(model):
    """The `Mean` metric behind a compiled model's `loss` log (`_loss_tracker`)."""
    return model._loss_tracker


def compiled_metrics(model):
    """The `CompileMetrics` holding the metrics passed to `compile()`
    (`_compile_metrics`; `None` before `compile` or without metrics)."""
    return getattr(model, "_compile_metrics", None)


def aggregate_additional_loss(model, loss):
    """A loss from `model.losses` as Keras adds it to the total
    (`_aggregate_additional_loss`: on TensorFlow, divided by the replicas)."""
    return model._aggregate_additional_loss(loss)


def scale_loss_for_distribution(value):
    """`value / replicas in sync` under a `tf.distribute` strategy, else `value`."""
    return keras_loss.scale_loss_for_distribution(value)


def unscale_loss_for_distribution(value):
    """The inverse of `scale_loss_for_distribution`."""
    return keras_loss.unscale_loss_for_distribution(value)


def sequential_graph(model):
    """The functional graph behind a `keras.Sequential` that starts with an
    `Input` (`Sequential._functional`), or `None`."""
    return getattr(model, "_functional", None)


def nodes_by_depth(function):
    """A functional model's graph nodes by depth (`Functional._nodes_by_depth`),
    or `None` for a model without a functional graph."""
    return getattr(function, "_nodes_by_depth", None)


def call_context_args(layer):
    """The call arguments a layer passes on to the layers it calls, such as
    `training` (`Layer._call_context_args`)."""
    return getattr(layer, "_call_context_args", {})


def standardize_inputs(function, inputs):
    """`inputs` arranged as a functional model's inputs
    (`Functional._standardize_inputs`)."""
    standardize = getattr(function, "_standardize_inputs", None)
    return standardize(inputs) if standardize else inputs


def keras_mask(tensor):
    """The Keras mask a symbolic layer output carries (`_keras_mask`, set by
    layers such as `Embedding(mask_zero=True)`), or `None`."""
    return getattr(tensor, "_keras_mask", None)


def strategy_supports_no_merge_call():
    """Whether the current `tf.distribute` strategy updates variables without
    `merge_call` (`tf.__internal__.distribute`)."""
    import tensorflow as tf

    return tf.__internal__.distribute.strategy_supports_no_merge_call()


def torch_max_norms(tensors):
    """The max-norm of every tensor, in one fused call (`torch._foreach_norm`,
    as `torch.nn.utils.clip_grad_norm_` uses)."""
    import torch

    return torch.stack(torch._foreach_norm(tensors, float("inf")))


def sync_trainer_state(model):
    """Copy the state a running `fit` keeps outside the variables back into
    them (`jax_state_sync` on JAX; nothing to do on the other backends)."""
    if keras.backend.backend() == "jax":
        sync = getattr(model, "jax_state_sync", None)
        if callable(sync):
            sync()


def sublayers(layer):
    """Every layer nested in `layer`, recursively, without itself (`_flatten_layers`)."""
    return list(layer._flatten_layers(include_self=False))


def own_losses(layer):
    """The losses `layer` itself added (`add_loss`, activity regularizers), not
    its sublayers' (`_get_own_losses`; inside a stateless scope, the scope's)."""
    return layer._get_own_losses()


def regularization_losses(layer):
    """The weight-regularizer penalties of `layer`'s trainable weights
    (`_get_regularization_losses`)."""
    return layer._get_regularization_losses()


def losses_without(model, excluded):
    """`model.losses` without those of the layers of `excluded` (a sub-model):
    the losses `add_loss` and the regularizers of every other layer added."""
    excluded_layers = {id(layer) for layer in sublayers(excluded)}
    excluded_layers.add(id(excluded))
    losses = own_losses(model)
    for layer in sublayers(model):
        if id(layer) not in excluded_layers:
            losses.extend(own_losses(layer))
    return losses + regularization_losses(model)
