"""Tasks beyond multi-class classification: binary (one logit), multi-label and
regression students, on every backend; and the inputs that used to be
accepted and quietly misused (issue: teacher losses, validation labels, a
teacher made trainable again, a non-finite temperature)."""

import warnings

import keras
import numpy as np
import pytest
from conftest import to_numpy, weights_of

from keras_vid import VIDDistiller
from keras_vid.losses import sigmoid_kl
from keras_vid.task_kind import kd_kind, task_kind


def _model(prefix, outputs, activity=None):
    inputs = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(4, 3, padding="same", name=f"{prefix}_conv")(inputs)
    x = keras.layers.ReLU(name=f"{prefix}_map", activity_regularizer=activity)(x)
    x = keras.layers.GlobalAveragePooling2D(name=f"{prefix}_pool")(x)
    return keras.Model(inputs, keras.layers.Dense(outputs, name=f"{prefix}_out")(x), name=prefix)


def _np_sigmoid_kl(t, s, temperature):
    def log_sigmoid(z):
        return -np.logaddexp(0.0, -z)

    t, s = np.asarray(t, "float64") / temperature, np.asarray(s, "float64") / temperature
    p = 1 / (1 + np.exp(-t))
    kl = p * (log_sigmoid(t) - log_sigmoid(s)) + (1 - p) * (log_sigmoid(-t) - log_sigmoid(-s))
    return temperature**2 * kl.sum(axis=-1)


def _bce_logits(y, z):
    z = np.asarray(z, "float64")
    return np.mean(np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z))))


CASES = {
    "binary": (1, lambda r: r.integers(0, 2, size=(24, 1)), "bce"),
    "multi-label": (3, lambda r: r.integers(0, 2, size=(24, 3)).astype("float32"), "bce"),
    "regression-int": (2, lambda r: r.integers(0, 7, size=(24, 2)), "mse"),
    "regression-float": (1, lambda r: r.normal(size=(24, 1)).astype("float32"), "mse"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_task_trains_with_vid_pairs_and_its_kd(case):
    outputs, labels, loss_name = CASES[case]
    rng = np.random.default_rng(0)
    x = rng.normal(size=(24, 6, 6, 2)).astype("float32")
    y = labels(rng)
    keras.utils.set_random_seed(0)
    teacher, student = _model("t", outputs), _model("s", outputs)
    binary = loss_name == "bce"
    loss = (
        keras.losses.BinaryCrossentropy(from_logits=True)
        if binary
        else keras.losses.MeanSquaredError()
    )
    distiller = VIDDistiller(teacher, student, pairs=[("s_map", "t_map")])
    distiller.compile(
        optimizer=keras.optimizers.SGD(0.05), loss=loss, kd_weight=1.0 if binary else 0.0,
        temperature=2.0,
    )  # fmt: skip
    before = weights_of(student)
    history = distiller.fit(x, y, batch_size=8, epochs=2, verbose=0)
    assert int(to_numpy(distiller.step_guard.skipped_steps)) == 0
    assert np.isfinite(history.history["loss"]).all()
    assert all(not np.allclose(a, b) for a, b in zip(before, weights_of(student)))
    logs = distiller.evaluate(x, y, batch_size=24, verbose=0, return_dict=True)
    s_logits = to_numpy(student.predict(x, verbose=0))
    t_logits = to_numpy(teacher.predict(x, verbose=0))
    y64 = np.asarray(y, "float64").reshape(s_logits.shape)
    if binary:
        np.testing.assert_allclose(logs["task_loss"], _bce_logits(y64, s_logits), rtol=1e-4)
        kd = _np_sigmoid_kl(t_logits, s_logits, 2.0).mean()
        np.testing.assert_allclose(logs["kd_loss"], kd, rtol=1e-4, atol=1e-6)
    else:
        mse = np.mean((y64 - s_logits) ** 2)
        np.testing.assert_allclose(logs["task_loss"], mse, rtol=1e-4)
        assert "kd_loss" not in logs


def test_sigmoid_kl_against_numpy_and_zero_at_agreement():
    rng = np.random.default_rng(1)
    t, s = rng.normal(size=(5, 3)) * 4, rng.normal(size=(5, 3)) * 4
    got = to_numpy(sigmoid_kl(t.astype("float32"), s.astype("float32"), 3.0))
    np.testing.assert_allclose(got, _np_sigmoid_kl(t, s, 3.0), rtol=1e-4, atol=1e-6)
    same = to_numpy(sigmoid_kl(t.astype("float32"), t.astype("float32"), 1.0))
    np.testing.assert_allclose(same, 0.0, atol=1e-6)
    big = to_numpy(
        sigmoid_kl(np.array([[200.0]], "float32"), np.array([[-200.0]], "float32"), 1.0)
    )
    assert np.isfinite(big).all() and big[0] > 100


def test_task_kind_follows_the_loss():
    assert task_kind(keras.losses.SparseCategoricalCrossentropy()) == "sparse"
    assert task_kind("sparse_categorical_crossentropy") == "sparse"
    assert task_kind("categorical_crossentropy") == "categorical"
    assert task_kind(keras.losses.BinaryCrossentropy()) == "binary"
    assert task_kind("mse") == "regression" and task_kind(keras.losses.Huber()) == "regression"
    assert task_kind(lambda y, p: p) is None and task_kind(None) is None
    assert kd_kind(None, 1) == "sigmoid" and kd_kind(None, 5) == "softmax"
    assert kd_kind("regression", 3) is None and kd_kind("binary", 4) == "sigmoid"


def test_regression_with_kd_and_bad_temperatures_are_refused_at_compile():
    keras.utils.set_random_seed(0)
    distiller = VIDDistiller(_model("t", 2), _model("s", 2), pairs=[("s_map", "t_map")])
    with pytest.raises(ValueError, match="regression"):
        distiller.compile(optimizer="sgd", loss="mse", kd_weight=1.0)
    for bad in (float("inf"), float("nan"), 0.0):
        with pytest.raises(ValueError, match="finite number > 0"):
            distiller.compile(optimizer="sgd", loss="mse", temperature=bad)


def test_binary_labels_outside_zero_one_are_refused():
    keras.utils.set_random_seed(0)
    distiller = VIDDistiller(_model("t", 1), _model("s", 1), pairs=[("s_map", "t_map")])
    distiller.compile(optimizer="sgd", loss=keras.losses.BinaryCrossentropy(from_logits=True))
    x = np.zeros((4, 6, 6, 2), "float32")
    with pytest.raises(ValueError, match=r"binary cross-entropy.*\[0, 1\]"):
        distiller.fit(x, np.array([[0], [1], [2], [1]]), verbose=0)


def test_validation_labels_are_checked_like_training_labels():
    keras.utils.set_random_seed(0)
    distiller = VIDDistiller(_model("t", 4), _model("s", 4), pairs=[("s_map", "t_map")])
    distiller.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(True))
    x = np.zeros((8, 6, 6, 2), "float32")
    y = np.arange(8) % 4
    with pytest.raises(ValueError, match=r"validation_data.*\[0, 7\]"):
        distiller.fit(x, y, validation_data=(x, np.arange(8)), verbose=0)


def test_teacher_losses_stay_out_of_the_task_loss():
    """An activity regularizer inside the frozen teacher adds nothing to
    `task_loss` or `loss`: both equal the student's cross-entropy (NumPy)."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(16, 6, 6, 2)).astype("float32")
    y = rng.integers(0, 3, size=16)
    keras.utils.set_random_seed(0)
    teacher = _model("t", 3, activity=keras.regularizers.L2(100.0))
    student = _model("s", 3)
    distiller = VIDDistiller(teacher, student, pairs=[("s_map", "t_map")])
    distiller.compile(
        optimizer=keras.optimizers.SGD(0.0), loss=keras.losses.SparseCategoricalCrossentropy(True),
        vid_weight=0.0,
    )  # fmt: skip
    history = distiller.fit(x, y, batch_size=16, epochs=1, verbose=0)
    logits = to_numpy(student.predict(x, verbose=0)).astype("float64")
    shifted = logits - logits.max(1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
    ce = -np.mean(log_p[np.arange(16), y])
    np.testing.assert_allclose(history.history["task_loss"][0], ce, rtol=1e-4)
    np.testing.assert_allclose(history.history["loss"][0], ce, rtol=1e-4)


def test_a_teacher_made_trainable_again_stays_frozen():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(16, 6, 6, 2)).astype("float32")
    y = rng.integers(0, 3, size=16)
    keras.utils.set_random_seed(0)
    teacher, student = _model("t", 3), _model("s", 3)
    distiller = VIDDistiller(teacher, student, pairs=[("s_map", "t_map")])
    distiller.compile(
        optimizer=keras.optimizers.AdamW(0.01, weight_decay=0.5),
        loss=keras.losses.SparseCategoricalCrossentropy(True),
    )
    teacher.trainable = True
    before = weights_of(teacher)
    with pytest.warns(UserWarning, match="stays frozen"):
        distiller.fit(x, y, batch_size=8, epochs=2, verbose=0)
    assert not teacher.trainable_weights
    for a, b in zip(before, weights_of(teacher)):
        np.testing.assert_array_equal(a, b)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        distiller.fit(x, y, batch_size=8, epochs=1, verbose=0)  # no warning once frozen
