"""Layer paths into nested functional models and one-pass extractors."""

import keras
import numpy as np
import pytest
from conftest import small_cnn, to_numpy

from keras_vid import VIDDistiller
from keras_vid.extractors import feature_extractor
from keras_vid.features import find_layer, layer_output
from keras_vid.flat_graph import FlatGraph


class CallCounter(keras.layers.Layer):
    """Identity layer that counts its eager calls."""

    calls = 0

    def call(self, x):
        CallCounter.calls += 1
        return x


def backbone(width=4, name="backbone", counter=None, batch_norm=False):
    """Two-stage functional backbone: `s1_out` (8×8), `s2_out` (4×4)."""
    inputs = keras.Input((8, 8, 3))
    x = counter(inputs) if counter is not None else inputs
    x = keras.layers.Conv2D(width, 3, padding="same", name="c1")(x)
    if batch_norm:
        x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU(name="s1_out")(x)
    x = keras.layers.MaxPooling2D(name="down")(x)
    x = keras.layers.Conv2D(2 * width, 3, padding="same", name="c2")(x)
    x = keras.layers.ReLU(name="s2_out")(x)
    return keras.Model(inputs, x, name=name)


def classifier(body, name="clf", training=None):
    """`body` used as one layer of a classifier, then pooling and logits."""
    inputs = keras.Input((8, 8, 3))
    x = body(inputs) if training is None else body(inputs, training=training)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(5, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


@pytest.fixture
def x():
    return np.random.default_rng(0).random((4, 8, 8, 3)).astype("float32")


def extractor_for(model, names, role="teacher"):
    features = {
        f"pair_{i}": layer_output(find_layer(model, n, role), model, role)
        for i, n in enumerate(names)
    }
    return feature_extractor(model, features, "extractor")


def test_nested_extractor_matches_model_and_shares_weights(x):
    keras.utils.set_random_seed(0)
    body = backbone()
    model = classifier(body)
    extractor = extractor_for(model, ["backbone/s1_out", "backbone/s2_out", "pool"])
    out = extractor(x)
    np.testing.assert_allclose(to_numpy(out["logits"]), to_numpy(model(x)), atol=1e-6)
    s1 = keras.Model(body.inputs[0], body.get_layer("s1_out").output)(x)
    np.testing.assert_allclose(to_numpy(out["pair_0"]), to_numpy(s1), atol=1e-6)
    np.testing.assert_allclose(to_numpy(out["pair_1"]), to_numpy(body(x)), atol=1e-6)
    assert out["pair_1"].shape == (4, 4, 4, 8)
    # The same variables, not copies.
    assert len(extractor.weights) == len(model.weights) == 6
    assert {id(v) for v in extractor.weights} == {id(v) for v in model.weights}
    model.get_layer("logits").kernel.assign(np.ones((8, 5), "float32"))
    np.testing.assert_allclose(to_numpy(extractor(x)["logits"]), to_numpy(model(x)), atol=1e-5)


def test_plain_names_keep_the_original_graph(x):
    body = backbone()
    model = classifier(body)
    extractor = extractor_for(model, ["pool"])
    # Not flattened: the backbone is still one layer of the extractor.
    assert any(layer is body for layer in extractor.layers)
    assert extractor.get_layer("pool") is model.get_layer("pool")


def test_paths_three_levels_deep(x):
    keras.utils.set_random_seed(0)
    inner = backbone(name="inner")
    inputs = keras.Input((8, 8, 3))
    middle = keras.Model(inputs, keras.layers.ReLU(name="mid_relu")(inner(inputs)), name="mid")
    model = classifier(middle)
    assert find_layer(model, "mid/inner/s1_out", "teacher") is inner.get_layer("s1_out")
    extractor = extractor_for(model, ["mid/inner/s1_out", "mid/mid_relu"])
    out = extractor(x)
    np.testing.assert_allclose(to_numpy(out["logits"]), to_numpy(model(x)), atol=1e-6)
    np.testing.assert_allclose(to_numpy(out["pair_1"]), to_numpy(middle(x)), atol=1e-6)
    assert out["pair_0"].shape == (4, 8, 8, 4)


def test_path_into_sequential_submodel(x):
    keras.utils.set_random_seed(0)
    body = keras.Sequential(
        [keras.Input((8, 8, 3)), keras.layers.Conv2D(3, 1, name="c"), keras.layers.ReLU(name="r")],
        name="seq",
    )
    model = classifier(body)
    out = extractor_for(model, ["seq/c"])(x)
    conv = body.get_layer("c")
    np.testing.assert_allclose(to_numpy(out["pair_0"]), to_numpy(conv(x)), atol=1e-6)
    np.testing.assert_allclose(to_numpy(out["logits"]), to_numpy(model(x)), atol=1e-6)


@pytest.mark.parametrize("training", [None, True])
def test_training_false_on_a_nested_call_is_kept(x, training):
    keras.utils.set_random_seed(0)
    body = backbone(batch_norm=True)
    bn = body.get_layer("bn")
    bn.moving_mean.assign(np.full((4,), 0.5, "float32"))
    bn.moving_variance.assign(np.full((4,), 3.0, "float32"))
    model = classifier(body, training=False)
    extractor = extractor_for(model, ["backbone/s1_out"])
    got = extractor(x, training=training)["logits"]
    np.testing.assert_allclose(to_numpy(got), to_numpy(model(x, training=training)), atol=1e-5)


def test_unknown_path_component_lists_close_matches():
    model = classifier(backbone())
    with pytest.raises(ValueError, match=r"no layer named 's1_ot'.*Close matches.*'s1_out'"):
        find_layer(model, "backbone/s1_ot", "teacher")
    with pytest.raises(ValueError, match=r"'backbon/s1_out'.*Close matches.*'backbone'"):
        find_layer(model, "backbon/s1_out", "teacher")


def test_path_into_a_plain_layer_is_rejected():
    model = classifier(backbone())
    with pytest.raises(ValueError, match=r"goes inside 'pool', a GlobalAveragePooling2D"):
        find_layer(model, "pool/x", "student")
    with pytest.raises(ValueError, match="empty component"):
        find_layer(model, "backbone//s1_out", "student")


def test_nested_model_called_twice_is_ambiguous():
    body = backbone()
    inputs = keras.Input((8, 8, 3))
    twice = keras.layers.Add()([body(inputs), body(keras.layers.Rescaling(2.0)(inputs))])
    outputs = keras.layers.Dense(5, name="logits")(keras.layers.Flatten()(twice))
    model = keras.Model(inputs, outputs, name="twice")
    with pytest.raises(ValueError, match=r"'s1_out'.*called 2 times"):
        layer_output(find_layer(model, "backbone/s1_out", "teacher"), model, "teacher")


def test_flat_graph_calls_every_layer_once_in_order():
    model = classifier(backbone())
    paths = [call.path for call in FlatGraph(model).calls]
    assert paths == [
        "backbone/c1",
        "backbone/s1_out",
        "backbone/down",
        "backbone/c2",
        "backbone/s2_out",
        "pool",
        "logits",
    ]


def test_distiller_with_nested_pairs_runs_each_model_once(x):
    keras.utils.set_random_seed(0)
    teacher = classifier(backbone(8, counter=CallCounter()), name="t")
    student = small_cnn("s", 4, counter=CallCounter())
    pairs = [("s_g1", "backbone/s1_out"), ("s_g2", "backbone/s2_out"), ("s_pool", "logits")]
    distiller = VIDDistiller(teacher, student, pairs=pairs)
    assert [h.teacher_shape for h in distiller.heads] == [
        (None, 8, 8, 8),
        (None, 4, 4, 16),
        (None, 5),
    ]
    CallCounter.calls = 0
    t_out = distiller.teacher_extractor(x, training=False)
    assert CallCounter.calls == 1  # the backbone ran once for logits and both features
    distiller.student_extractor(x, training=False)
    assert CallCounter.calls == 2
    np.testing.assert_allclose(to_numpy(t_out["logits"]), to_numpy(teacher(x)), atol=1e-5)
    # The extractor's weights are the teacher's own (frozen) variables.
    assert {id(v) for v in distiller.teacher_extractor.weights} == {id(v) for v in teacher.weights}
