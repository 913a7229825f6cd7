"""`VIDHead` against its NumPy reference, its contract and its config."""

import math

import keras
import numpy as np
import numpy_reference as ref
import pytest
from conftest import to_numpy, value_and_grad

from keras_vid import VIDHead

SHAPE_CASES = {
    "maps": ((3, 6, 6, 4), (3, 6, 6, 5)),
    "student_map_pooled": ((3, 8, 8, 4), (3, 4, 4, 5)),
    "teacher_map_pooled": ((3, 4, 4, 4), (3, 8, 8, 5)),
    "non_square_mixed": ((3, 8, 3, 4), (3, 4, 6, 5)),
    "non_divisible": ((3, 7, 5, 2), (3, 3, 5, 3)),
    "vectors": ((3, 7), (3, 10)),
    "vector_to_map": ((3, 7), (3, 2, 3, 4)),
    "map_to_vector": ((3, 4, 4, 6), (3, 10)),
    "sequences": ((3, 6, 4), (3, 3, 5)),
}


def _features(student_shape, teacher_shape, seed=0):
    rng = np.random.default_rng(seed)
    return (
        rng.normal(size=student_shape).astype("float32"),
        rng.normal(size=teacher_shape).astype("float32"),
    )


@pytest.mark.parametrize("case", sorted(SHAPE_CASES))
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_nll_matches_numpy_reference(case, reduction):
    s, t = _features(*SHAPE_CASES[case])
    head = VIDHead(reduction=reduction)
    got = to_numpy(head(s, t))
    assert got.shape == (s.shape[0],) and got.dtype == np.float32
    np.testing.assert_allclose(got, ref.head_nll(head, s, t), rtol=2e-5, atol=2e-5)


def test_default_regressor_layout():
    maps = VIDHead()
    maps.build((None, 8, 8, 4), (None, 8, 8, 6))
    # 1×1 convolutions as Dense layers on the channel axis.
    convs = [layer for layer in maps.regressor if isinstance(layer, keras.layers.Dense)]
    assert len(convs) == 3 and not any(c.use_bias for c in convs)
    assert [c.units for c in convs] == [6, 6, 6]
    assert [tuple(c.kernel.shape) for c in convs] == [(4, 6), (6, 6), (6, 6)]
    assert sum(isinstance(layer, keras.layers.ReLU) for layer in maps.regressor) == 2

    vectors = VIDHead()
    vectors.build((None, 16), (None, 10))
    assert [type(layer) for layer in vectors.regressor] == [keras.layers.Dense]

    custom = VIDHead(depth=2, hidden_width=3, use_batch_norm=True)
    custom.build((None, 8, 8, 4), (None, 8, 8, 6))
    kinds = [type(layer).__name__ for layer in custom.regressor]
    assert kinds == ["Dense", "BatchNormalization", "ReLU", "Dense"]
    assert custom.regressor[0].units == 3


def test_initial_variance_and_epsilon():
    head = VIDHead(init_variance=2.5, epsilon=1e-3)
    head.build((None, 4), (None, 6))
    np.testing.assert_allclose(to_numpy(head.variance), np.full(6, 2.5), rtol=1e-6)
    np.testing.assert_allclose(
        to_numpy(head.std), ref.softplus(to_numpy(head.alpha)) + 1e-3, rtol=1e-6
    )


def test_mean_shape_and_value():
    s, t = _features((2, 8, 8, 3), (2, 4, 4, 5))
    head = VIDHead()
    head(s, t)
    mu = to_numpy(head.mean(s))
    assert mu.shape == (2, 4, 4, 5)
    np.testing.assert_allclose(mu, ref.head_mean(head, s), rtol=1e-4, atol=1e-5)


def test_loss_floor_is_log_epsilon():
    # A perfect mean and σ at its floor: every element contributes log ε.
    head = VIDHead(epsilon=1e-3)
    s, t = _features((2, 4), (2, 3))
    head.build(s.shape, t.shape)
    head.alpha.assign(np.full(3, -80.0, "float32"))
    mu = ref.head_mean(head, s)
    value = to_numpy(head(s, mu.astype("float32")))
    np.testing.assert_allclose(value, np.log(1e-3), rtol=1e-3)


def test_no_gradient_flows_into_the_teacher():
    s, t = _features((2, 4, 4, 3), (2, 4, 4, 3))
    head = VIDHead()
    head.build(s.shape, t.shape)
    _, grad = value_and_grad(lambda teacher: keras.ops.sum(head(s, teacher)), t)
    assert grad is None or np.all(np.asarray(grad) == 0)


def test_gradient_wrt_alpha_through_the_head():
    s, t = _features((4, 3, 3, 2), (4, 3, 3, 2))
    head = VIDHead(reduction="sum")
    head.build(s.shape, t.shape)
    mu = ref.head_mean(head, s)
    sq = ((t - mu) ** 2).sum(axis=(0, 1, 2))

    def loss(alpha):
        std = keras.ops.softplus(alpha) + head.epsilon
        from keras_vid.losses import gaussian_nll

        return keras.ops.sum(gaussian_nll(t, mu.astype("float32"), std, "sum"))

    alpha = to_numpy(head.alpha).copy()
    _, grad = value_and_grad(loss, alpha)
    sigma = ref.softplus(alpha.astype("float64")) + head.epsilon
    n = 4 * 3 * 3
    expected = (n / sigma - sq / sigma**3) / (1 + np.exp(-alpha))
    np.testing.assert_allclose(grad, expected, rtol=1e-4)


def test_learn_variance_false_is_half_mse_fitnet():
    s, t = _features((4, 6), (4, 3))
    head = VIDHead(learn_variance=False, init_variance=1.0, epsilon=1e-6)
    value = to_numpy(head(s, t))
    assert not head.alpha.trainable
    mu = ref.head_mean(head, s)
    expected = 0.5 * ((t - mu) ** 2).mean(axis=1) + math.log(1.0)
    np.testing.assert_allclose(value, expected, rtol=1e-4, atol=1e-5)


def test_config_round_trip_and_build_config():
    head = VIDHead(
        depth=2,
        hidden_width=7,
        use_batch_norm=True,
        init_variance=3.0,
        epsilon=1e-4,
        reduction="sum",
        name="h",
    )
    s, t = _features((2, 8, 8, 3), (2, 4, 4, 5))
    head(s, t)
    clone = VIDHead.from_config(head.get_config())
    assert clone.get_config() == head.get_config()
    clone.build_from_config(head.get_build_config())
    clone.set_weights(head.get_weights())
    np.testing.assert_allclose(to_numpy(clone(s, t)), to_numpy(head(s, t)), rtol=1e-6)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(head))
    assert isinstance(restored, VIDHead) and restored.reduction == "sum"


def test_saved_inside_a_functional_model(tmp_path):
    s, t = _features((2, 6), (2, 4))
    s_in, t_in = keras.Input((6,)), keras.Input((4,))
    model = keras.Model([s_in, t_in], VIDHead(name="vid")(s_in, t_in))
    expected = to_numpy(model([s, t]))
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(to_numpy(loaded([s, t])), expected, rtol=1e-6)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"init_variance": 0.0}, "init_variance"),
        ({"init_variance": -1.0}, "init_variance"),
        ({"epsilon": 0.0}, "epsilon"),
        ({"epsilon": -1e-5}, "epsilon"),
        ({"reduction": "max"}, "reduction"),
        ({"depth": 0}, "depth"),
        ({"hidden_width": -3}, "hidden_width"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        VIDHead(**kwargs)


@pytest.mark.parametrize(
    "student_shape, teacher_shape, match",
    [
        ((None, 6, 4), (None, 4, 4, 3), "rank-3 map cannot be regressed onto a rank-4"),
        ((None, 2, 2, 2, 4), (None, 4, 4, 3), "rank 5"),
        ((None, 8), (None, None, None, 3), "spatial size to be known"),
        ((None, None, None, 4), (None, 4, 4, 3), "not all known"),
    ],
)
def test_unmappable_shapes_raise_naming_the_head(student_shape, teacher_shape, match):
    with pytest.raises(ValueError, match=match) as info:
        VIDHead(name="my_head").build(student_shape, teacher_shape)
    assert "my_head" in str(info.value)
