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
    # σ = √((softplus(α) + ε)² + min_variance), the default floor being 0.1.
    assert head.min_variance == 0.1
    expected = np.sqrt((ref.softplus(to_numpy(head.alpha)) + 1e-3) ** 2 + 0.1)
    np.testing.assert_allclose(to_numpy(head.std), expected, rtol=1e-6)


def test_mean_shape_and_value():
    s, t = _features((2, 8, 8, 3), (2, 4, 4, 5))
    head = VIDHead()
    head(s, t)
    mu = to_numpy(head.mean(s))
    assert mu.shape == (2, 4, 4, 5)
    np.testing.assert_allclose(mu, ref.head_mean(head, s), rtol=1e-4, atol=1e-5)


def test_loss_floor_is_log_epsilon():
    # Without a variance floor (the PyTorch references' setting), a perfect
    # mean and σ at ε: every element contributes log ε.
    head = VIDHead(epsilon=1e-3, min_variance=0.0)
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


# ------------------------------------------------------------- variance floor


@pytest.mark.parametrize("min_variance", [0.5, 1.0])
def test_variance_floor_matches_numpy_and_starts_at_init_variance(min_variance):
    s, t = _features((3, 4, 4, 2), (3, 4, 4, 3), seed=3)
    head = VIDHead(min_variance=min_variance, init_variance=6.0)
    value = to_numpy(head(s, t))
    np.testing.assert_allclose(to_numpy(head.variance), np.full(3, 6.0), rtol=1e-5)
    np.testing.assert_allclose(value, ref.head_nll(head, s, t), rtol=2e-5, atol=2e-5)
    # σ² = (softplus(α) + ε)² + v.
    expected = (ref.softplus(to_numpy(head.alpha).astype("float64")) + 1e-5) ** 2 + min_variance
    np.testing.assert_allclose(to_numpy(head.variance), expected, rtol=1e-5)


def test_variance_floor_bounds_loss_and_gradient():
    # α → −∞: σ² reaches the floor v, the loss per element of a perfect mean
    # is ½·log v (not log ε) and ∂loss/∂μ = (μ − t) / v, not (μ − t) / ε².
    v = 0.25
    head = VIDHead(min_variance=v)
    s, t = _features((2, 5), (2, 3), seed=4)
    head.build(s.shape, t.shape)
    head.alpha.assign(np.full(3, -80.0, "float32"))
    np.testing.assert_allclose(to_numpy(head.variance), np.full(3, v), rtol=1e-4)
    mu = ref.head_mean(head, s).astype("float32")
    np.testing.assert_allclose(to_numpy(head(s, mu)), 0.5 * math.log(v), rtol=1e-4)

    from keras_vid.losses import gaussian_nll

    target = mu + 0.1
    _, grad = value_and_grad(
        lambda m: keras.ops.sum(gaussian_nll(target, m, head.std, "sum")), mu.copy()
    )
    np.testing.assert_allclose(grad, np.full_like(mu, -0.1 / v), rtol=1e-3)


def test_variance_floor_gradient_wrt_alpha():
    # d/dα of Σ [½ log σ² + e/(2σ²)] with σ² = (softplus(α) + ε)² + v.
    v = 1.0
    s, t = _features((4, 3, 3, 2), (4, 3, 3, 2), seed=5)
    head = VIDHead(reduction="sum", min_variance=v, init_variance=3.0)
    head.build(s.shape, t.shape)
    mu = ref.head_mean(head, s)
    sq = ((t - mu) ** 2).sum(axis=(0, 1, 2))
    n = 4 * 3 * 3

    def loss(alpha):
        from keras_vid.losses import gaussian_nll

        std = keras.ops.sqrt(keras.ops.square(keras.ops.softplus(alpha) + head.epsilon) + v)
        return keras.ops.sum(gaussian_nll(t, mu.astype("float32"), std, "sum"))

    alpha = to_numpy(head.alpha).astype("float64")
    _, grad = value_and_grad(loss, alpha.astype("float32"))
    u = ref.softplus(alpha) + head.epsilon
    var = u**2 + v
    dvar = 2 * u / (1 + np.exp(-alpha))
    expected = (n / (2 * var) - sq / (2 * var**2)) * dvar
    np.testing.assert_allclose(grad, expected, rtol=1e-4)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"min_variance": -1.0}, "min_variance"),
        ({"min_variance": float("inf")}, "min_variance"),
        ({"min_variance": "1"}, "min_variance"),
        ({"min_variance": 6.0, "init_variance": 5.0}, "init_variance"),
    ],
)
def test_bad_variance_floor_is_rejected_early(kwargs, match):
    with pytest.raises(ValueError, match=match):
        VIDHead(**kwargs)


def test_variance_may_start_at_the_floor():
    """`init_variance == min_variance` (the TensorFlow reproduction's floor of
    1 with the default σ² of 1) starts σ² at the floor."""
    head = VIDHead(min_variance=1.0, init_variance=1.0)
    head.build((None, 4), (None, 3))
    np.testing.assert_allclose(to_numpy(head.variance), np.full(3, 1.0), rtol=1e-6)


# ------------------------------------------------------- μ's widths and BN


def test_hidden_width_list_sets_each_layer():
    head = VIDHead(hidden_width=[12, 7])
    head.build((None, 4, 4, 3), (None, 4, 4, 5))
    dense = [layer for layer in head.regressor if isinstance(layer, keras.layers.Dense)]
    assert [d.units for d in dense] == [12, 7, 5]
    assert [tuple(d.kernel.shape) for d in dense] == [(3, 12), (12, 7), (7, 5)]
    s, t = _features((2, 4, 4, 3), (2, 4, 4, 5), seed=6)
    np.testing.assert_allclose(to_numpy(head(s, t)), ref.head_nll(head, s, t), rtol=2e-5)

    vectors = VIDHead(hidden_width=[9])
    vectors.build((None, 6), (None, 4))
    assert [d.units for d in vectors.regressor if isinstance(d, keras.layers.Dense)] == [9, 4]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"hidden_width": [4, 4], "depth": 2}, "hidden layers"),
        ({"hidden_width": []}, "hidden_width"),
        ({"hidden_width": [4, 0]}, "hidden_width"),
        ({"hidden_width": [4, 2.5]}, "hidden_width"),
        ({"use_batch_norm": "last"}, "use_batch_norm"),
    ],
)
def test_bad_regressor_options_are_rejected_early(kwargs, match):
    with pytest.raises(ValueError, match=match):
        VIDHead(**kwargs)


def test_batch_norm_after_every_layer():
    head = VIDHead(use_batch_norm="all", hidden_width=[8, 8])
    head.build((None, 4, 4, 3), (None, 4, 4, 5))
    kinds = [type(layer).__name__ for layer in head.regressor]
    assert kinds == [
        "Dense",
        "BatchNormalization",
        "ReLU",
        "Dense",
        "BatchNormalization",
        "ReLU",
        "Dense",
        "BatchNormalization",
    ]
    assert not any(getattr(layer, "use_bias", False) for layer in head.regressor)
    s, t = _features((2, 4, 4, 3), (2, 4, 4, 5), seed=7)
    # Inference mode: BN uses its moving statistics, as the NumPy reference does.
    np.testing.assert_allclose(
        to_numpy(head(s, t, training=False)), ref.head_nll(head, s, t), rtol=2e-5, atol=2e-5
    )
    # Vectors (VID-LP) keep no bias either: BN's β takes its place.
    vectors = VIDHead(use_batch_norm="all")
    vectors.build((None, 6), (None, 4))
    assert [type(layer).__name__ for layer in vectors.regressor] == [
        "Dense",
        "BatchNormalization",
    ]
    assert not vectors.regressor[0].use_bias
    hidden = VIDHead(use_batch_norm="hidden")
    hidden.build((None, 4, 4, 3), (None, 4, 4, 5))
    assert [type(layer).__name__ for layer in hidden.regressor].count("BatchNormalization") == 2


def test_new_options_round_trip_through_config():
    head = VIDHead(hidden_width=[6, 5], use_batch_norm="all", min_variance=1.0)
    head.build((None, 4, 4, 3), (None, 4, 4, 2))
    clone = VIDHead.from_config(head.get_config())
    assert clone.hidden_width == [6, 5]
    assert clone.use_batch_norm == "all" and clone.min_variance == 1.0
    clone.build((None, 4, 4, 3), (None, 4, 4, 2))
    clone.set_weights(head.get_weights())
    s, t = _features((2, 4, 4, 3), (2, 4, 4, 2), seed=8)
    np.testing.assert_allclose(
        to_numpy(clone(s, t, training=False)), to_numpy(head(s, t, training=False)), rtol=1e-6
    )


# ------------------------------------------------------- α's gradient scale


@pytest.mark.parametrize(
    "reduction, scale, factor",
    [
        ("mean", "channels", 5.0),
        ("sum", "channels", 1.0),
        ("mean", 3.0, 3.0),
    ],
)
def test_alpha_gradient_scale_multiplies_only_the_gradient(reduction, scale, factor):
    s, t = _features((3, 4, 4, 2), (3, 4, 4, 5), seed=9)
    plain = VIDHead(reduction=reduction, alpha_gradient_scale=1.0)
    plain.build(s.shape, t.shape)
    scaled = VIDHead(reduction=reduction, alpha_gradient_scale=scale)
    scaled.build(s.shape, t.shape)
    scaled.set_weights(plain.get_weights())
    alpha = to_numpy(plain.alpha).copy() + np.linspace(-1, 1, 5).astype("float32")
    plain.alpha.assign(alpha)
    scaled.alpha.assign(alpha)
    # Same value, σ included; the loss gradient with respect to α times the factor.
    np.testing.assert_array_equal(to_numpy(scaled(s, t)), to_numpy(plain(s, t)))
    np.testing.assert_array_equal(to_numpy(scaled.variance), to_numpy(plain.variance))

    def alpha_grad(head):
        from keras_vid.losses import gaussian_nll

        mu = ref.head_mean(head, s).astype("float32")

        def loss(a):
            std = (
                keras.ops.softplus(
                    a + (head._alpha_scale() - 1.0) * (a - keras.ops.stop_gradient(a))
                )
                + head.epsilon
            )
            return keras.ops.sum(gaussian_nll(t, mu, std, reduction))

        return value_and_grad(loss, alpha)[1]

    np.testing.assert_allclose(alpha_grad(scaled), factor * alpha_grad(plain), rtol=1e-5)
    assert VIDHead.from_config(scaled.get_config()).alpha_gradient_scale == scale


def test_alpha_gradient_scale_through_the_layer():
    # The scale acts inside the layer's own call, as the trainers differentiate it.
    s, t = _features((3, 4), (3, 6), seed=10)
    grads = []
    for scale in (1.0, "channels"):
        keras.utils.set_random_seed(0)
        head = VIDHead(alpha_gradient_scale=scale)
        head.build(s.shape, t.shape)
        grads.append(_layer_alpha_grad(head, s, t))
    np.testing.assert_allclose(grads[1], 6.0 * grads[0], rtol=1e-5)


def _layer_alpha_grad(head, s, t):
    """d mean(head(s, t)) / dα, on the current backend, through the layer."""
    from conftest import BACKEND

    if BACKEND == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = keras.ops.mean(head(s, t))
        return to_numpy(tape.gradient(loss, head.alpha.value))
    if BACKEND == "jax":
        import jax

        def f(alpha):
            with keras.StatelessScope(state_mapping=[(head.alpha, alpha)]):
                return keras.ops.mean(head(s, t))

        return to_numpy(jax.grad(f)(head.alpha.value))

    head.alpha.value.grad = None
    loss = keras.ops.mean(head(s, t))
    loss.backward()
    return head.alpha.value.grad.detach().cpu().numpy()


@pytest.mark.parametrize("bad", [0.0, -1.0, "layers", True, float("inf")])
def test_bad_alpha_gradient_scale_is_rejected_early(bad):
    assert VIDHead().alpha_gradient_scale == "channels"  # the default
    with pytest.raises(ValueError, match="alpha_gradient_scale"):
        VIDHead(alpha_gradient_scale=bad)
