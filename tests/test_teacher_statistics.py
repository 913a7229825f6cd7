"""VIDHead(normalize_teacher=True): the teacher feature in units of its own spread.

The head estimates each teacher channel's mean and variance (`fit` calibrates
them on its first data; a head used alone averages its first training
batches), then keeps them fixed, and scores the standardised feature, so its
variance settings mean the same on any layer and the loss does not depend on
the scale of the teacher's features.
"""

import keras
import numpy as np
import numpy_reference as ref
import pytest
from conftest import small_cnn, to_numpy

from keras_vid import VIDDistiller, VIDHead


def _batch(rng, scale=1.0, shift=0.0):
    s = rng.normal(size=(6, 4, 4, 3)).astype("float32")
    t = (shift + scale * rng.normal(size=(6, 4, 4, 5))).astype("float32")
    return s, t


def test_first_training_call_sets_the_statistics_and_scores_the_standardised_feature():
    rng = np.random.default_rng(0)
    s, t = _batch(rng, scale=30.0, shift=7.0)
    head = VIDHead()
    head.build(s.shape, t.shape)
    nll = to_numpy(head(s, t, training=True))
    np.testing.assert_allclose(to_numpy(head.teacher_mean), t.mean(axis=(0, 1, 2)), rtol=1e-5)
    np.testing.assert_allclose(to_numpy(head.teacher_variance), t.var(axis=(0, 1, 2)), rtol=1e-4)
    assert float(to_numpy(head.statistics_count)) == 1.0
    np.testing.assert_allclose(nll, ref.head_nll(head, s, t), rtol=1e-4, atol=1e-5)
    standardised = (t - t.mean(axis=(0, 1, 2))) / t.std(axis=(0, 1, 2))
    np.testing.assert_allclose(ref.head_target(head, t), standardised, rtol=1e-3, atol=1e-4)


def test_running_average_over_the_first_batches_then_fixed_and_no_update_outside_training():
    rng = np.random.default_rng(1)
    head = VIDHead(statistics_batches=2)
    s1, t1 = _batch(rng)
    s2, t2 = _batch(rng, scale=3.0, shift=2.0)
    s3, t3 = _batch(rng, scale=0.5, shift=-1.0)
    head.build(s1.shape, t1.shape)
    assert not head.calibrated
    head(s1, t1)  # inference: no update
    assert float(to_numpy(head.statistics_count)) == 0.0
    head(s1, t1, training=True)
    head(s2, t2, training=True)
    m1, m2 = (t.mean(axis=(0, 1, 2)) for t in (t1, t2))
    v1, v2 = (t.var(axis=(0, 1, 2)) for t in (t1, t2))
    np.testing.assert_allclose(to_numpy(head.teacher_mean), (m1 + m2) / 2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(to_numpy(head.teacher_variance), (v1 + v2) / 2, rtol=1e-4)
    assert head.calibrated
    head(s3, t3, training=True)  # fixed after `statistics_batches` batches
    np.testing.assert_allclose(to_numpy(head.teacher_mean), (m1 + m2) / 2, rtol=1e-5, atol=1e-6)
    assert float(to_numpy(head.statistics_count)) == 2.0


def test_calibrate_sets_and_fixes_the_statistics():
    rng = np.random.default_rng(4)
    s, t = _batch(rng, scale=4.0, shift=3.0)
    s2, t2 = _batch(rng)
    head = VIDHead()
    head.build(s.shape, t.shape)
    head.calibrate(t)
    assert head.calibrated
    head(s2, t2, training=True)
    np.testing.assert_allclose(to_numpy(head.teacher_mean), t.mean(axis=(0, 1, 2)), rtol=1e-5)
    np.testing.assert_allclose(to_numpy(head.teacher_variance), t.var(axis=(0, 1, 2)), rtol=1e-4)


def test_masked_tokens_are_left_out_of_the_statistics():
    rng = np.random.default_rng(2)
    s = rng.normal(size=(2, 5, 3)).astype("float32")
    t = rng.normal(size=(2, 5, 4)).astype("float32")
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 0, 0, 0]], bool)
    t_padded = t.copy()
    t_padded[~mask] = 1e4  # padding holds garbage
    head = VIDHead()
    head.build(s.shape, t.shape)
    head(s, t_padded, training=True, padding_mask=mask)
    real = t[mask]
    np.testing.assert_allclose(to_numpy(head.teacher_mean), real.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(to_numpy(head.teacher_variance), real.var(axis=0), rtol=1e-4)


def test_off_scores_the_raw_feature_and_has_no_statistics():
    rng = np.random.default_rng(3)
    s, t = _batch(rng, scale=5.0)
    head = VIDHead(normalize_teacher=False)
    head.build(s.shape, t.shape)
    assert not any("teacher_mean" in w.path for w in head.weights)
    np.testing.assert_allclose(
        to_numpy(head(s, t, training=True)), ref.head_nll(head, s, t), rtol=1e-4
    )


def test_config_round_trip():
    head = VIDHead(normalize_teacher=False, statistics_batches=7)
    clone = VIDHead.from_config(head.get_config())
    assert clone.normalize_teacher is False and clone.statistics_batches == 7
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match="statistics_batches"):
            VIDHead(statistics_batches=bad)


def _scaled_teacher(teacher, factor):
    """The same teacher with its `t_g1` feature multiplied by `factor`."""
    inputs = keras.Input(teacher.input.shape[1:])
    x = inputs
    for layer in teacher.layers[1:]:
        x = layer(x)
        if layer.name == "t_g1":
            x = keras.layers.Rescaling(factor, name="t_g1_scaled")(x)
    return keras.Model(inputs, x, name=f"t_scaled_{factor:g}")


def test_training_does_not_depend_on_the_scale_of_the_teacher_feature(data):
    """A teacher feature × 1000 trains the student exactly as the original
    would have had it been × 1 (same rescaled features downstream), on every
    backend: the head scores both in units of their own spread."""
    x, y = data
    keras.utils.set_random_seed(0)
    base = small_cnn("t", 8)
    students, logs = [], []
    for factor in (1.0, 1000.0):
        teacher = _scaled_teacher(base, factor)
        keras.utils.set_random_seed(1)
        student = small_cnn("s", 4)
        distiller = VIDDistiller(teacher, student, pairs=[("s_g1", "t_g1_scaled")])
        distiller.compile(
            optimizer=keras.optimizers.SGD(0.05),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        history = distiller.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
        students.append([to_numpy(w) for w in student.trainable_weights])
        logs.append(history.history["vid_0"])
        head = distiller.heads[0]  # calibrated by `fit` on its first batch, then fixed
        extractor = keras.Model(teacher.input, teacher.get_layer("t_g1_scaled").output)
        features = to_numpy(extractor(x[:8]))
        np.testing.assert_allclose(
            to_numpy(head.teacher_mean), features.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-6
        )
        assert head.calibrated
    np.testing.assert_allclose(logs[0], logs[1], rtol=1e-3, atol=1e-4)
    for a, b in zip(*students):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)
