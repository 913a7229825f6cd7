"""Numerical robustness of `VIDHead`: properties, extreme values, mixed precision."""

import keras
import numpy as np
import numpy_reference as ref
import pytest
from conftest import BACKEND, to_numpy, value_and_grad
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keras_vid import VIDDistiller, VIDHead


@st.composite
def head_cases(draw):
    rank = draw(st.sampled_from([2, 3, 4]))
    batch = draw(st.integers(1, 3))
    s_channels, t_channels = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    if rank == 2:
        s_shape, t_shape = (batch, s_channels), (batch, t_channels)
    else:
        space = st.integers(1, 5)
        s_space = tuple(draw(space) for _ in range(rank - 2))
        t_space = tuple(draw(space) for _ in range(rank - 2))
        s_shape, t_shape = (batch, *s_space, s_channels), (batch, *t_space, t_channels)
    return {
        "student_shape": s_shape,
        "teacher_shape": t_shape,
        "reduction": draw(st.sampled_from(["mean", "sum"])),
        "dtype": draw(st.sampled_from(["float32", "float16", "bfloat16"])),
        "scale": draw(st.sampled_from([1e-3, 1.0, 30.0])),
        "seed": draw(st.integers(0, 2**16)),
    }


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(head_cases())
def test_head_properties(case):
    rng = np.random.default_rng(case["seed"])
    s = (rng.normal(size=case["student_shape"]) * case["scale"]).astype("float32")
    t = (rng.normal(size=case["teacher_shape"]) * case["scale"]).astype("float32")
    head = VIDHead(reduction=case["reduction"], epsilon=1e-4, dtype=case["dtype"])
    s_in = keras.ops.cast(s, case["dtype"])
    nll = to_numpy(head(s_in, t))
    assert nll.dtype == np.float32 and nll.shape == (s.shape[0],)
    assert np.all(np.isfinite(nll))
    # Never below the floor: log(σ floor) per element.
    t_pooled = ref.head_target(head, t)
    elements = np.prod(t_pooled.shape[1:])
    floor = np.log(1e-4) * (elements if case["reduction"] == "sum" else 1)
    assert np.all(nll >= floor - 1e-4 * abs(floor))
    if case["dtype"] == "float32":
        np.testing.assert_allclose(nll, ref.head_nll(head, s, t), rtol=1e-4, atol=1e-4)

    def loss(alpha):
        std = keras.ops.softplus(alpha) + head.epsilon
        from keras_vid.losses import gaussian_nll

        mean = head.mean(s_in)
        return keras.ops.sum(gaussian_nll(head.target(t), mean, std, case["reduction"]))

    _, grad = value_and_grad(loss, to_numpy(head.alpha).copy())
    assert np.all(np.isfinite(grad))


@pytest.mark.parametrize("magnitude", [1e4, 1e-6, 0.0])
@pytest.mark.parametrize("alpha", [-100.0, 0.0, 100.0])
def test_extreme_values_stay_finite(magnitude, alpha):
    rng = np.random.default_rng(0)
    s = (rng.normal(size=(4, 3, 3, 4)) * magnitude).astype("float32")
    t = (rng.normal(size=(4, 3, 3, 6)) * magnitude).astype("float32")
    head = VIDHead()
    head.build(s.shape, t.shape)
    head.alpha.assign(np.full(6, alpha, "float32"))
    assert np.all(np.isfinite(to_numpy(head(s, t))))

    from keras_vid.losses import gaussian_nll

    def loss(a):
        std = keras.ops.softplus(a) + head.epsilon
        return keras.ops.sum(gaussian_nll(head.target(t), head.mean(s), std))

    value, grad = value_and_grad(loss, np.full(6, alpha, "float32"))
    assert np.isfinite(value) and np.all(np.isfinite(grad))
    _, grad_s = value_and_grad(lambda x: keras.ops.sum(head(x, t)), s)
    assert np.all(np.isfinite(grad_s))


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_training_stays_finite(policy):
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        keras.utils.set_random_seed(0)

        def mlp(prefix, width):
            inputs = keras.Input((12,))
            h = keras.layers.Dense(width, activation="relu", name=f"{prefix}_h")(inputs)
            return keras.Model(inputs, keras.layers.Dense(4, name=f"{prefix}_logits")(h))

        distiller = VIDDistiller(
            mlp("t", 32), mlp("s", 8), pairs=[("s_h", "t_h"), ("s_h", "t_logits")]
        )
        distiller.compile(
            optimizer=keras.optimizers.SGD(0.02, momentum=0.9, weight_decay=1e-3),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            kd_weight=0.5,
        )
        if policy == "mixed_float16":
            assert isinstance(distiller.optimizer, keras.optimizers.LossScaleOptimizer)
        rng = np.random.default_rng(0)
        x = rng.normal(size=(256, 12)).astype("float32")
        y = rng.integers(0, 4, size=256)
        history = distiller.fit(x, y, batch_size=8, epochs=8, verbose=0).history  # 256 steps
        head = distiller.heads[0]
        assert head.alpha.dtype == "float32"
        assert head.regressor[0].compute_dtype == policy.split("_")[1]
        nll = head(keras.ops.ones((2, 8)), keras.ops.ones((2, 32)))
        assert keras.backend.standardize_dtype(nll.dtype) == "float32"
        for name, values in history.items():
            assert np.all(np.isfinite(values)), name
        assert history["loss"][-1] < history["loss"][0]
    finally:
        keras.config.set_dtype_policy(previous)


def test_backend_under_test_is_supported():
    assert BACKEND in ("tensorflow", "jax", "torch")
