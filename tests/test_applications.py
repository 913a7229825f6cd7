"""`keras.applications` models (built with `weights=None`, no download) as
teacher and student: auto and named pairs, training, evaluation, save/load."""

import keras
import numpy as np
import pytest
from conftest import to_numpy, weights_of

from keras_vid import VIDDistiller, suggest_pairs

TEACHER_STAGES = [
    "block_1_expand_relu",
    "block_2_add",
    "block_5_add",
    "block_12_add",
    "block_15_add",
]
# The student's first two stage ends are ReLU layers Keras names itself
# ("re_lu", "re_lu_2", numbered by what ran before): checked by resolution.
STUDENT_STAGES = ["expanded_conv_2_add", "expanded_conv_7_add", "expanded_conv_10_add"]


@pytest.fixture(scope="module")
def models():
    keras.utils.set_random_seed(0)
    teacher = keras.applications.MobileNetV2(
        input_shape=(32, 32, 3), alpha=1.0, weights=None, classes=10
    )
    student = keras.applications.MobileNetV3Small(
        input_shape=(32, 32, 3),
        alpha=0.5,
        minimalistic=True,
        weights=None,
        classes=10,
        include_preprocessing=False,
    )
    return teacher, student


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    return rng.random((16, 32, 32, 3)).astype("float32"), rng.integers(0, 10, 16)


def test_auto_pairs_match_the_stages_by_resolution(models):
    teacher, student = models
    assert student.count_params() < teacher.count_params() / 2
    pairs = suggest_pairs(teacher, student)
    assert [t for _, t in pairs] == TEACHER_STAGES
    assert [s for s, _ in pairs][2:] == STUDENT_STAGES
    assert [d.student.resolution for d in pairs.details] == [
        (16, 16),
        (8, 8),
        (4, 4),
        (2, 2),
        (1, 1),
    ]
    for detail in pairs.details:
        assert detail.student.resolution == detail.teacher.resolution
        assert isinstance(student.get_layer(detail.student.path), keras.layers.ReLU) or (
            detail.student.path in STUDENT_STAGES
        )


def distill(models, pairs):
    teacher, student = models
    # keras.applications classifiers end in a softmax: KD reads log-probabilities.
    with pytest.warns(UserWarning, match="'predictions'.*log-probabilities"):
        distiller = VIDDistiller(teacher, student, pairs=pairs)
    distiller.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss="sparse_categorical_crossentropy",  # the models end in a softmax
        metrics=["accuracy"],
        kd_weight=1.0,
    )
    return distiller


@pytest.mark.parametrize("pairs", ["auto", [("expanded_conv_7_add", "block_12_add")]])
def test_distil_train_evaluate_save_and_load(models, data, pairs, tmp_path):
    x, y = data
    distiller = distill(models, pairs)
    teacher_before = weights_of(distiller.teacher)
    student_before = weights_of(distiller.student)
    alpha_before = [to_numpy(h.alpha).copy() for h in distiller.heads]
    history = distiller.fit(x, y, batch_size=8, epochs=2, verbose=0).history
    assert np.all(np.isfinite(history["loss"]))
    assert {f"vid_{i}" for i in range(len(distiller.heads))} <= set(history)
    for before, after in zip(teacher_before, weights_of(distiller.teacher)):
        np.testing.assert_array_equal(before, after)
    assert any(
        not np.allclose(b, a) for b, a in zip(student_before, weights_of(distiller.student))
    )
    for before, head in zip(alpha_before, distiller.heads):
        assert not np.allclose(before, to_numpy(head.alpha))
    logs = distiller.evaluate(x, y, batch_size=8, verbose=0, return_dict=True)
    assert 0.0 <= logs["accuracy"] <= 1.0 and np.isfinite(logs["loss"])

    path = tmp_path / "distiller.keras"
    distiller.save(path)
    with pytest.warns(UserWarning, match="log-probabilities"):
        loaded = keras.saving.load_model(path)
    assert loaded.pairs == distiller.pairs
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), distiller.predict(x, verbose=0), rtol=1e-4, atol=1e-6
    )
    again = loaded.evaluate(x, y, batch_size=8, verbose=0, return_dict=True)
    assert again["loss"] == pytest.approx(logs["loss"], rel=1e-4)
