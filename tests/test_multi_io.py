"""Multi-input and multi-output teachers and students (issue 14)."""

import keras
import numpy as np
import numpy_reference as ref
import pytest
from conftest import CallCounter, calls_per_step, to_numpy

from keras_vid import VIDDistiller

CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def two_input_model(
    prefix, width, keys=("image", "extra"), classes=5, outputs="logits", count=False
):
    """A CNN on `image` (8×8×3) joined with a Dense branch on `extra` (4,).

    `outputs`: "logits" (one output), "dict" (`{"aux": (batch, 3),
    "logits": ...}`) or "list" (`[aux, logits]`). `count`: count the calls
    (`CallCounter`, which cannot be saved).
    """
    inputs = {
        "image": keras.Input((8, 8, 3), name="image"),
        "extra": keras.Input((4,), name="extra"),
    }
    inputs = {key: inputs[key] for key in keys}
    x = CallCounter(name=f"{prefix}_counter")(inputs["image"]) if count else inputs["image"]
    x = keras.layers.Conv2D(width, 3, padding="same", name=f"{prefix}_conv")(x)
    x = keras.layers.ReLU(name=f"{prefix}_g1")(x)
    x = keras.layers.GlobalAveragePooling2D(name=f"{prefix}_gap")(x)
    if "extra" in inputs:
        e = keras.layers.Dense(width, name=f"{prefix}_extra")(inputs["extra"])
        x = keras.layers.Add(name=f"{prefix}_join")([x, e])
    x = keras.layers.Dense(width, activation="relu", name=f"{prefix}_pool")(x)
    logits = keras.layers.Dense(classes, name=f"{prefix}_logits")(x)
    if outputs == "dict":
        aux = keras.layers.Dense(3, name=f"{prefix}_aux")(x)
        return keras.Model(inputs, {"logits": logits, "aux": aux}, name=prefix)
    if outputs == "list":
        aux = keras.layers.Dense(3, name=f"{prefix}_aux")(x)
        return keras.Model(inputs, [aux, logits], name=prefix)
    return keras.Model(inputs, logits, name=prefix)


PAIRS = [("s_g1", "t_g1"), ("s_pool", "t_logits")]


@pytest.fixture
def batch():
    rng = np.random.default_rng(0)
    x = {
        "image": rng.random((16, 8, 8, 3)).astype("float32"),
        "extra": rng.normal(size=(16, 4)).astype("float32"),
    }
    return x, rng.integers(0, 5, size=(16,))


def check_terms(distiller, x, y, temperature=2.0):
    """Every logged term equals its NumPy reference on the models' own outputs."""
    logs = distiller.test_on_batch(x, y, return_dict=True)
    s_feats = distiller.student_extractor.predict_on_batch(distiller._student_inputs(x))
    t_feats = distiller.teacher_extractor.predict_on_batch(x)
    for k, head in enumerate(distiller.heads):
        nll = ref.head_nll(head, s_feats[f"pair_{k}"], t_feats[f"pair_{k}"])
        assert logs[f"vid_{k}"] == pytest.approx(np.mean(nll), rel=1e-4)
    kd = ref.softened_kl(t_feats["logits"], s_feats["logits"], temperature)
    assert logs["kd_loss"] == pytest.approx(np.mean(kd), rel=1e-4)
    return logs, t_feats, s_feats


def test_dict_inputs_train_and_match_numpy(batch):
    x, y = batch
    keras.utils.set_random_seed(0)
    teacher, student = two_input_model("t", 8), two_input_model("s", 4)
    distiller = VIDDistiller(teacher, student, pairs=PAIRS)
    distiller.compile(
        optimizer=keras.optimizers.SGD(0.05), loss=CE, kd_weight=1.0, temperature=2.0
    )
    _, t_feats, s_feats = check_terms(distiller, x, y)
    np.testing.assert_allclose(t_feats["logits"], to_numpy(teacher(x)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(s_feats["logits"], to_numpy(student(x)), rtol=1e-5, atol=1e-6)
    before = to_numpy(student.get_layer("s_extra").kernel).copy()
    history = distiller.fit(x, y, batch_size=8, epochs=2, verbose=0).history
    assert np.all(np.isfinite(history["loss"]))
    assert not np.allclose(before, to_numpy(student.get_layer("s_extra").kernel))
    np.testing.assert_allclose(
        distiller.predict(x, verbose=0), to_numpy(student(x)), rtol=1e-5, atol=1e-6
    )


def test_list_inputs_train(batch):
    x, y = batch
    keras.utils.set_random_seed(0)

    def model(prefix, width):
        a, b = keras.Input((8, 8, 3)), keras.Input((4,))
        h = keras.layers.Conv2D(width, 3, padding="same", name=f"{prefix}_g1")(a)
        h = keras.layers.GlobalAveragePooling2D()(h)
        h = keras.layers.Concatenate(name=f"{prefix}_pool")([h, b])
        return keras.Model([a, b], keras.layers.Dense(5, name=f"{prefix}_logits")(h))

    distiller = VIDDistiller(model("t", 8), model("s", 4), pairs=PAIRS)
    distiller.compile(optimizer="sgd", loss=CE, kd_weight=1.0, temperature=2.0)
    xs = [x["image"], x["extra"]]
    check_terms(distiller, xs, y)
    assert np.all(np.isfinite(distiller.fit(xs, y, batch_size=8, verbose=0).history["loss"]))


def test_student_on_a_subset_of_dict_inputs_runs_once_per_step(batch):
    x, y = batch
    keras.utils.set_random_seed(0)
    teacher = two_input_model("t", 8, count=True)
    student = two_input_model("s", 4, keys=("image",), count=True)
    distiller = VIDDistiller(teacher, student, pairs=PAIRS)
    distiller.compile(optimizer="sgd", loss=CE, kd_weight=1.0, temperature=2.0, run_eagerly=True)
    check_terms(distiller, x, y)
    np.testing.assert_allclose(
        distiller.predict(x, verbose=0),
        to_numpy(student({"image": x["image"]})),
        rtol=1e-5,
        atol=1e-6,
    )
    # One teacher pass and one student pass per step.
    assert calls_per_step(distiller, x, y, batch_size=8) == [2, 2]


def test_student_key_missing_from_the_teacher_is_named():
    teacher = two_input_model("t", 8, keys=("image",))
    student = two_input_model("s", 4)
    with pytest.raises(ValueError, match=r"input key 'extra'.*Received: teacher input keys"):
        VIDDistiller(teacher, student, pairs=PAIRS)


def test_shape_mismatch_names_the_key_and_shapes():
    teacher = two_input_model("t", 8)
    inputs = {
        "image": keras.Input((8, 8, 3), name="image"),
        "extra": keras.Input((6,), name="extra"),
    }
    h = keras.layers.Conv2D(4, 3, padding="same", name="s_g1")(inputs["image"])
    h = keras.layers.GlobalAveragePooling2D()(h)
    h = keras.layers.Concatenate(name="s_pool")([h, inputs["extra"]])
    student = keras.Model(inputs, keras.layers.Dense(5)(h))
    with pytest.raises(ValueError, match=r"input shape at key 'extra'.*\(None, 4\).*\(None, 6\)"):
        VIDDistiller(teacher, student, pairs=PAIRS)


def test_different_input_structures_are_refused():
    teacher = two_input_model("t", 8)
    a, b = keras.Input((8, 8, 3)), keras.Input((4,))
    h = keras.layers.Conv2D(4, 3, padding="same", name="s_g1")(a)
    h = keras.layers.Concatenate(name="s_pool")([keras.layers.GlobalAveragePooling2D()(h), b])
    student = keras.Model([a, b], keras.layers.Dense(5)(h))
    with pytest.raises(ValueError, match=r"same input structure.*Received: teacher 't' inputs"):
        VIDDistiller(teacher, student, pairs=PAIRS)


@pytest.mark.parametrize("choice", ["logits", "t_logits", 1])
def test_teacher_output_chooses_the_logits(batch, choice):
    x, y = batch
    keras.utils.set_random_seed(0)
    teacher = two_input_model("t", 8, outputs="dict")  # outputs: aux (sorted first), logits
    student = two_input_model("s", 4)
    distiller = VIDDistiller(teacher, student, pairs=PAIRS, teacher_output=choice)
    distiller.compile(optimizer="sgd", loss=CE, kd_weight=1.0, temperature=2.0)
    _, t_feats, _ = check_terms(distiller, x, y)
    np.testing.assert_allclose(
        t_feats["logits"], to_numpy(teacher(x)["logits"]), rtol=1e-5, atol=1e-6
    )


def test_student_output_chooses_the_logits_for_loss_and_metrics(batch):
    x, y = batch
    keras.utils.set_random_seed(0)
    teacher = two_input_model("t", 8)
    student = two_input_model("s", 4, outputs="list")  # [aux (3 classes), logits (5)]
    distiller = VIDDistiller(teacher, student, pairs=PAIRS, student_output="s_logits")
    distiller.compile(
        optimizer="sgd", loss=CE, metrics=["accuracy"], kd_weight=1.0, temperature=2.0
    )
    logs, _, s_feats = check_terms(distiller, x, y)
    logits = to_numpy(student(x)[1])
    np.testing.assert_allclose(s_feats["logits"], logits, rtol=1e-5, atol=1e-6)
    assert logs["task_loss"] == pytest.approx(float(to_numpy(CE(y, logits))), rel=1e-5)
    assert logs["accuracy"] == pytest.approx(np.mean(logits.argmax(-1) == y))
    assert distiller.step_guard.classes == 5


def test_several_outputs_without_a_choice_are_refused():
    teacher = two_input_model("t", 8, outputs="dict")
    with pytest.raises(ValueError, match=r"has 2 outputs \(\['aux', 'logits'\]\).*teacher_output"):
        VIDDistiller(teacher, two_input_model("s", 4), pairs=PAIRS)


@pytest.mark.parametrize(
    "choice,match",
    [
        ("probs", r"no output named 'probs'. Its outputs: \['aux', 'logits'\]"),
        (2, r"out of range.*2 output\(s\). Received: teacher_output=2"),
        (1.0, r"output name \(str\) or index \(int\)"),
    ],
)
def test_unknown_output_choice_is_named(choice, match):
    teacher = two_input_model("t", 8, outputs="dict")
    with pytest.raises(ValueError, match=match):
        VIDDistiller(teacher, two_input_model("s", 4), pairs=PAIRS, teacher_output=choice)


def test_kd_on_outputs_of_different_class_counts_is_refused():
    teacher = two_input_model("t", 8, outputs="dict")
    distiller = VIDDistiller(teacher, two_input_model("s", 4), pairs=PAIRS, teacher_output="aux")
    with pytest.raises(ValueError, match=r"teacher 't' has 3 output classes and the student"):
        distiller.compile(optimizer="sgd", loss=CE, kd_weight=1.0)


def test_output_choice_survives_save_and_load(batch, tmp_path):
    x, y = batch
    keras.utils.set_random_seed(0)
    teacher = two_input_model("t", 8, outputs="dict")
    student = two_input_model("s", 4, keys=("image",), outputs="list")
    distiller = VIDDistiller(
        teacher, student, pairs=PAIRS, teacher_output="logits", student_output=1
    )
    distiller.compile(optimizer=keras.optimizers.Adam(1e-2), loss=CE, kd_weight=0.5)
    distiller.fit(x, y, batch_size=8, epochs=1, verbose=0)
    path = tmp_path / "distiller.keras"
    distiller.save(path)
    loaded = keras.saving.load_model(path)
    config = loaded.get_config()
    assert (config["teacher_output"], config["student_output"]) == ("logits", 1)
    assert loaded._student_input_keys == ["image"]
    first = distiller.train_on_batch(x, y, return_dict=True)
    second = loaded.train_on_batch(x, y, return_dict=True)
    for name in ("loss", "kd_loss", "vid_0", "vid_1", "task_loss"):
        assert second[name] == pytest.approx(first[name], rel=1e-5)


def test_auto_pairs_on_multi_input_models_read_the_layers_every_input_reaches():
    teacher, student = two_input_model("t", 8), two_input_model("s", 4)
    # The image branch runs beside the `extra` branch: only the layers after
    # the join are stage ends, so the suggestion is VID-LP.
    assert VIDDistiller(teacher, student, pairs="auto").pairs == [("s_pool", "t_logits")]


def test_auto_pairs_on_multi_output_models_ask_for_names():
    teacher = two_input_model("t", 8, outputs="dict")
    with pytest.raises(ValueError, match=r"'t' has 2 outputs; `suggest_pairs`.*name the pairs"):
        VIDDistiller(teacher, two_input_model("s", 4), pairs="auto", teacher_output="logits")


def test_empty_dict_inputs_are_refused_clearly(batch):
    x, y = batch
    distiller = VIDDistiller(two_input_model("t", 8), two_input_model("s", 4), pairs=PAIRS)
    distiller.compile(optimizer="sgd", loss=CE)
    empty = {key: value[:0] for key, value in x.items()}
    with pytest.raises(ValueError, match=r"`fit\(\)` received an input with 0 examples"):
        distiller.fit(empty, y[:0], verbose=0)
