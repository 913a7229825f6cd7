"""The experiment model builders: layer names, shapes, architecture specs."""

import numpy as np
import pytest
from conftest import to_numpy

from keras_vid.experiments import parse_architecture
from keras_vid.experiments.models import (
    GROUP_OUTPUTS,
    cnn_block_names,
    mlp,
    small_cnn,
    wide_resnet,
)


def test_small_cnn_stage_names_and_shapes():
    model = small_cnn((4, 8), convs_per_block=2, num_classes=5, input_shape=(8, 8, 1))
    assert cnn_block_names((4, 8)) == ("block1", "block2")
    shapes = [tuple(model.get_layer(n).output.shape[1:]) for n in cnn_block_names((4, 8))]
    assert shapes == [(8, 8, 4), (4, 4, 8)]
    assert "block1_relu1" in {layer.name for layer in model.layers}
    # Pre-activation names: the BatchNormalization whose ReLU is the stage output.
    pre = cnn_block_names((4, 8), convs_per_block=2, pre_activation=True)
    assert pre == ("block1_bn2", "block2_bn2")
    for name, stage in zip(pre, cnn_block_names((4, 8))):
        assert model.get_layer(stage).input is model.get_layer(name).output
    assert tuple(model.get_layer("pool").output.shape[1:]) == (8,)
    assert tuple(model.output.shape[1:]) == (5,)


def test_mlp_hidden_names_and_shapes():
    model = mlp((7, 5), num_classes=3, input_shape=(4, 4, 1))
    assert tuple(model.get_layer("hidden1").output.shape[1:]) == (7,)
    assert tuple(model.get_layer("hidden2").output.shape[1:]) == (5,)
    assert tuple(model.output.shape[1:]) == (3,)


def test_small_cnn_rejects_empty_filters():
    with pytest.raises(ValueError, match="filters"):
        small_cnn(())


@pytest.mark.parametrize(
    "spec, stages, hidden, penultimate",
    [
        ("wrn-10-1", GROUP_OUTPUTS, (), "pool"),
        ("cnn-4,8", ("block1", "block2"), (), "pool"),
        ("cnn-4,8x2", ("block1", "block2"), (), "pool"),
        ("mlp-6,5", (), ("hidden1", "hidden2"), "hidden2"),
    ],
)
def test_parse_architecture(spec, stages, hidden, penultimate):
    arch = parse_architecture(spec)
    assert arch.stages == stages
    assert arch.hidden == hidden
    assert arch.penultimate == penultimate
    if spec.startswith("wrn"):
        return  # building a WRN is slow on eager JAX; its names are the builder's own
    model = arch.build(10, (8, 8, 1))
    names = {layer.name for layer in model.layers}
    assert set(stages) | set(hidden) | {penultimate, "logits"} <= names


@pytest.mark.parametrize("spec", ["wrn-16", "resnet-18", "cnn-", "mlp-a"])
def test_parse_architecture_rejects_bad_names(spec):
    with pytest.raises(ValueError):
        parse_architecture(spec)


def test_wide_resnet_normalizes_raw_pixels_inside():
    mean, std = (120.0, 110.0, 100.0), (60.0, 50.0, 40.0)
    raw = wide_resnet(10, 1, 3, (8, 8, 3), normalize=(mean, std))
    plain = wide_resnet(10, 1, 3, (8, 8, 3))
    plain.set_weights(raw.get_weights())  # a Normalization given its statistics has no weights
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 3)).astype("float32")
    expected = plain((pixels - np.array(mean, "float32")) / np.array(std, "float32"))
    np.testing.assert_allclose(to_numpy(raw(pixels)), to_numpy(expected), rtol=1e-4, atol=1e-4)
    assert raw.get_layer("normalize").output.shape[1:] == (8, 8, 3)
    with pytest.raises(ValueError, match="one mean and one std per input channel"):
        wide_resnet(10, 1, 3, (8, 8, 3), normalize=((0.0,), (1.0,)))
