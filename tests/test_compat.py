"""One test per private API keras_vid reads (`keras_vid.compat`): a Keras,
TensorFlow or PyTorch upgrade that moves one fails here, by name."""

import keras
import numpy as np
import pytest
from conftest import BACKEND, to_numpy

from keras_vid import compat


def dense_model():
    inputs = keras.Input((3,))
    hidden = keras.layers.Dense(4, name="hidden")(inputs)
    return keras.Model(inputs, keras.layers.Dense(2, name="out")(hidden))


def test_optimizer_variable_key_matches_the_optimizer_s_own_bookkeeping():
    optimizer = keras.optimizers.AdamW(weight_decay=0.1)
    variable = keras.Variable(np.ones(3), name="v")
    optimizer.build([variable])
    key = compat.optimizer_variable_key(optimizer, variable)
    assert key == compat.optimizer_variable_key(optimizer, variable)  # stable
    other = keras.Variable(np.ones(3), name="v")
    assert compat.optimizer_variable_key(optimizer, other) != key  # per variable, not name


def test_weight_decay_exclusions_add_to_the_user_s():
    kept, added = keras.Variable(np.ones(2), name="kept"), keras.Variable(np.ones(2), name="new")
    decayed = keras.Variable(np.ones(2), name="decayed")
    optimizer = keras.optimizers.SGD(0.5, weight_decay=0.1)
    optimizer.exclude_from_weight_decay(var_list=[kept], var_names=["pattern"])
    compat.add_weight_decay_exclusions(optimizer, [added])
    keys, pattern = compat.weight_decay_exclusions(optimizer)
    for variable in (kept, added):
        assert compat.optimizer_variable_key(optimizer, variable) in keys
    assert pattern is not None
    # Behaviour, not bookkeeping: only the decayed variable shrinks with a zero gradient.
    optimizer.apply([keras.ops.zeros(2)] * 3, [kept, added, decayed])
    np.testing.assert_allclose(to_numpy(kept), 1.0)
    np.testing.assert_allclose(to_numpy(added), 1.0)
    assert np.all(to_numpy(decayed) < 1.0)


def test_loss_tracker_is_the_compiled_loss_log():
    model = dense_model()
    model.compile(optimizer="sgd", loss="mse")
    tracker = compat.loss_tracker(model)
    assert isinstance(tracker, keras.metrics.Mean)
    x, y = np.ones((4, 3), "float32"), np.zeros((4, 2), "float32")
    loss = model.evaluate(x, y, verbose=0)
    np.testing.assert_allclose(to_numpy(tracker.result()), loss, rtol=1e-6)


def test_aggregate_additional_loss_returns_a_scalar_loss():
    model = dense_model()
    value = compat.aggregate_additional_loss(model, keras.ops.convert_to_tensor(2.5))
    np.testing.assert_allclose(to_numpy(value), 2.5)


def test_distribution_scaling_is_the_identity_on_one_replica():
    value = keras.ops.convert_to_tensor(3.0)
    np.testing.assert_allclose(to_numpy(compat.scale_loss_for_distribution(value)), 3.0)
    np.testing.assert_allclose(to_numpy(compat.unscale_loss_for_distribution(value)), 3.0)


def test_sequential_graph_and_nodes_by_depth():
    sequential = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="d")])
    graph = compat.sequential_graph(sequential)
    assert isinstance(graph, keras.Model)
    depths = compat.nodes_by_depth(graph)
    layers = {node.operation.name for nodes in depths.values() for node in nodes if node.operation}
    assert "d" in layers
    assert compat.nodes_by_depth(keras.layers.Dense(2)) is None


def test_call_context_args_include_training():
    assert "training" in compat.call_context_args(keras.layers.BatchNormalization())


def test_standardize_inputs_flattens_like_the_functional_model():
    model = dense_model()
    x = np.ones((2, 3), "float32")
    arranged = keras.tree.flatten(compat.standardize_inputs(model, x))
    assert len(arranged) == 1 and tuple(arranged[0].shape) == (2, 3)


@pytest.mark.skipif(BACKEND != "tensorflow", reason="about the TensorFlow backend")
def test_strategy_supports_no_merge_call():
    assert compat.strategy_supports_no_merge_call() in (True, False)


@pytest.mark.skipif(BACKEND != "torch", reason="about the PyTorch backend")
def test_torch_max_norms():
    import torch

    norms = compat.torch_max_norms([torch.tensor([1.0, -3.0]), torch.tensor([float("nan")])])
    assert norms[0].item() == 3.0 and torch.isnan(norms[1])


def test_sync_trainer_state_is_safe_outside_fit():
    model = dense_model()
    model.compile(optimizer="sgd", loss="mse")
    compat.sync_trainer_state(model)  # nothing to sync: must not fail
    if BACKEND == "jax":
        assert callable(model.jax_state_sync)


def test_compiled_metrics_holds_the_compile_metrics():
    model = dense_model()
    assert compat.compiled_metrics(model) is None
    model.compile(optimizer="sgd", loss="mse", metrics=["mae"])
    metrics = compat.compiled_metrics(model)
    assert any(metric is metrics for metric in model.metrics)
    x, y = np.ones((4, 3), "float32"), np.zeros((4, 2), "float32")
    model.evaluate(x, y, verbose=0)
    assert set(metrics.result()) == {"mae"}


def test_keras_mask_reads_the_mask_a_symbolic_output_carries():
    tokens = keras.Input((5,), dtype="int32")
    embedded = keras.layers.Embedding(10, 4, mask_zero=True)(tokens)
    mask = compat.keras_mask(embedded)
    assert mask is not None and tuple(mask.shape) == (None, 5)
    assert compat.keras_mask(keras.layers.Dense(3)(keras.Input((4,)))) is None
    # The mask is the one the layer computes: false at token id 0.
    model = keras.Model(tokens, mask)
    out = to_numpy(model(np.array([[3, 0, 2, 0, 0]], "int32")))
    np.testing.assert_array_equal(out, [[True, False, True, False, False]])
