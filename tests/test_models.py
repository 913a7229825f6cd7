"""The experiment model builders: layer names, shapes, architecture specs."""

import pytest

from keras_vid.experiments import parse_architecture
from keras_vid.experiments.models import GROUP_OUTPUTS, cnn_block_names, mlp, small_cnn


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
