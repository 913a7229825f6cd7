"""The loss functions against NumPy references and closed forms."""

import numpy as np
import numpy_reference as ref
import pytest
from conftest import BACKEND, to_numpy, value_and_grad
from keras import ops

from keras_vid.losses import gaussian_nll, inverse_softplus, softened_kl, weighted_batch_mean


@pytest.mark.parametrize("shape", [(4, 6, 5, 3), (4, 7), (4, 5, 3)])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_gaussian_nll_matches_numpy(shape, reduction):
    rng = np.random.default_rng(1)
    t = rng.normal(size=shape).astype("float32")
    mu = rng.normal(size=shape).astype("float32")
    std = rng.uniform(0.2, 3.0, size=shape[-1:]).astype("float32")
    got = to_numpy(gaussian_nll(t, mu, std, reduction=reduction))
    np.testing.assert_allclose(got, ref.nll(t, mu, std, reduction), rtol=1e-5, atol=1e-5)
    assert got.shape == (shape[0],) and got.dtype == np.float32


def test_closed_form_with_variance_equal_to_mse():
    # With the right mean and σ² equal to the residual MSE of each channel,
    # the per-element loss is 0.5 · (1 + log MSE).
    rng = np.random.default_rng(2)
    residual = rng.normal(scale=[0.3, 1.0, 2.5], size=(5000, 3))
    mse = (residual**2).mean(axis=0)
    mu = rng.normal(size=(5000, 3))
    t = mu + residual
    per_channel = []
    for c in range(3):
        value = gaussian_nll(
            t[:, c : c + 1].astype("float32"),
            mu[:, c : c + 1].astype("float32"),
            np.sqrt(mse[c : c + 1]).astype("float32"),
        )
        per_channel.append(float(np.mean(to_numpy(value))))
    np.testing.assert_allclose(per_channel, 0.5 * (1 + np.log(mse)), rtol=1e-5)


def test_alpha_gradient_matches_analytic_derivative():
    rng = np.random.default_rng(3)
    t = rng.normal(size=(8, 4, 4, 3)).astype("float32")
    mu = rng.normal(size=(8, 4, 4, 3)).astype("float32")
    alpha = np.array([-1.0, 0.3, 2.0], dtype="float32")
    eps = 1e-5

    def loss(a):
        return ops.sum(gaussian_nll(t, mu, ops.softplus(a) + eps, reduction="sum"))

    value, grad = value_and_grad(loss, alpha)
    sigma = ref.softplus(alpha.astype("float64")) + eps
    sq = ((t.astype("float64") - mu) ** 2).sum(axis=(0, 1, 2))
    n = t.shape[0] * t.shape[1] * t.shape[2]
    sigmoid = 1.0 / (1.0 + np.exp(-alpha.astype("float64")))
    expected = (n / sigma - sq / sigma**3) * sigmoid
    np.testing.assert_allclose(grad, expected, rtol=1e-4)
    np.testing.assert_allclose(value, ref.nll(t, mu, sigma, "sum").sum(), rtol=1e-5)


def test_softened_kl_matches_numpy_and_is_zero_on_equal_logits():
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(2, 6, 10)).astype("float32") * 3
    got = to_numpy(softened_kl(a, b, 4.0))
    np.testing.assert_allclose(got, ref.softened_kl(a, b, 4.0), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(to_numpy(softened_kl(a, a, 2.0)), 0.0, atol=1e-6)


@pytest.mark.parametrize("temperature", [0.5, 4.0, 1e3, 1e5, 1e7])
@pytest.mark.parametrize("scale", [0.01, 1.0, 10.0])
def test_softened_kl_stays_accurate_at_any_temperature(temperature, scale):
    """Against 60-digit decimal arithmetic: float32 loses the direct form to
    cancellation at large T (2.7 % error at T = 1e3 before the centred form)."""
    rng = np.random.default_rng(5)
    a, b = (rng.normal(size=(2, 8, 10)) * scale).astype("float32")
    got = to_numpy(softened_kl(a, b, temperature))
    np.testing.assert_allclose(got, ref.softened_kl_exact(a, b, temperature), rtol=2e-5)


def test_softened_kl_gradient_is_finite_and_matches_the_closed_form_at_large_t():
    """d/ds of T²·KL → (s − t − mean_p(s − t))·p at large T (second order)."""
    rng = np.random.default_rng(6)
    t, s = rng.normal(size=(2, 4, 6)).astype("float32")
    _, grad = value_and_grad(lambda v: ops.sum(softened_kl(t, v, 1e4)), s)
    p = np.full_like(t, 1 / 6)
    diff = s - t
    expected = p * (diff - (p * diff).sum(-1, keepdims=True))
    assert np.isfinite(grad).all()
    np.testing.assert_allclose(grad, expected, rtol=1e-3, atol=1e-6)


def test_weighted_batch_mean_divides_by_batch_size():
    values = np.array([1.0, 2.0, 3.0, 4.0], dtype="float32")
    weights = np.array([1.0, 0.0, 2.0, 0.0], dtype="float32")
    assert float(to_numpy(weighted_batch_mean(values, weights))) == pytest.approx(7.0 / 4)
    assert float(to_numpy(weighted_batch_mean(values))) == pytest.approx(2.5)


def test_inverse_softplus_round_trips_including_large_values():
    values = np.array([1e-4, 0.5, 2.236, 30.0, 1e4])
    np.testing.assert_allclose(ref.softplus(inverse_softplus(values)), values, rtol=1e-9)


def test_unknown_reduction_is_rejected():
    with pytest.raises(ValueError, match="reduction"):
        gaussian_nll(np.zeros((2, 3)), np.zeros((2, 3)), np.ones(3), reduction="max")


@pytest.mark.skipif(
    BACKEND != "tensorflow",
    reason="only TensorFlow traces with spatial sizes unknown until run time",
)
def test_gaussian_nll_sum_with_spatial_sizes_known_only_at_run_time():
    import tensorflow as tf

    rng = np.random.default_rng(4)
    t = rng.normal(size=(2, 5, 3, 4)).astype("float32")
    mu = rng.normal(size=t.shape).astype("float32")
    std = rng.uniform(0.5, 2.0, size=(4,)).astype("float32")
    spec = tf.TensorSpec((None, None, None, 4), "float32")

    @tf.function(input_signature=[spec, spec])
    def nll(t, mu):
        return gaussian_nll(t, mu, std, reduction="sum")

    np.testing.assert_allclose(to_numpy(nll(t, mu)), ref.nll(t, mu, std, "sum"), rtol=1e-5)
