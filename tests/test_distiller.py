"""`VIDDistiller`: training effects, logs, weighting, saving and bad input."""

import keras
import numpy as np
import numpy_reference as ref
import pytest
from conftest import (
    BACKEND,
    CNN_PAIRS,
    CallCounter,
    calls_per_step,
    small_cnn,
    to_numpy,
    weights_of,
)

from keras_vid import VIDDistiller, VIDHead

CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def make_distiller(models, **compile_kwargs):
    teacher, student = models
    distiller = VIDDistiller(teacher, student, pairs=CNN_PAIRS)
    compile_kwargs.setdefault("optimizer", keras.optimizers.SGD(0.05, momentum=0.9))
    distiller.compile(loss=CE, metrics=["accuracy"], **compile_kwargs)
    return distiller


def bn_statistics(model):
    return [
        to_numpy(v).copy()
        for layer in model.layers
        if isinstance(layer, keras.layers.BatchNormalization)
        for v in (layer.moving_mean, layer.moving_variance)
    ]


def changed(before, after):
    return [not np.allclose(a, b) for a, b in zip(before, after)]


def test_fit_moves_student_and_heads_but_not_teacher(models, data):
    x, y = data
    teacher, student = models
    distiller = make_distiller(models, kd_weight=0.5)
    teacher_before, student_before = weights_of(teacher), weights_of(student)
    teacher_bn = bn_statistics(teacher)
    heads_before = [weights_of(head) for head in distiller.heads]
    alphas_before = [to_numpy(head.alpha).copy() for head in distiller.heads]

    history = distiller.fit(x, y, batch_size=8, epochs=2, verbose=0, validation_data=(x, y))

    assert not any(changed(teacher_before, weights_of(teacher)))
    assert not any(changed(teacher_bn, bn_statistics(teacher)))
    assert all(changed(student_before, weights_of(student)))  # BN statistics included
    for head, before, alpha in zip(distiller.heads, heads_before, alphas_before):
        assert all(changed(before, weights_of(head)))
        assert not np.allclose(alpha, to_numpy(head.alpha))
    keys = set(history.history)
    for name in ("loss", "task_loss", "vid_0", "vid_1", "vid_2", "kd_loss", "accuracy"):
        assert name in keys and f"val_{name}" in keys
        assert np.all(np.isfinite(history.history[name]))
    assert history.history["loss"][-1] < history.history["loss"][0]


def test_logged_loss_is_the_weighted_sum_of_its_terms(models, data):
    x, y = data
    distiller = make_distiller(models, vid_weight=[0.5, 2.0, 1.5], kd_weight=0.25)
    logs = distiller.test_on_batch(x, y, return_dict=True)
    expected = (
        logs["task_loss"]
        + 0.5 * logs["vid_0"]
        + 2.0 * logs["vid_1"]
        + 1.5 * logs["vid_2"]
        + 0.25 * logs["kd_loss"]
    )
    assert logs["loss"] == pytest.approx(expected, rel=1e-5)


def test_task_weight_scales_the_task_term_only(models, data):
    x, y = data
    distiller = make_distiller(models, vid_weight=[0.5, 2.0, 1.5], task_weight=0.1)
    logs = distiller.test_on_batch(x, y, return_dict=True)
    expected = 0.1 * logs["task_loss"] + 0.5 * logs["vid_0"] + 2.0 * logs["vid_1"]
    assert logs["loss"] == pytest.approx(expected + 1.5 * logs["vid_2"], rel=1e-5)
    # The logged task loss is the unweighted cross-entropy.
    plain = make_distiller(models).test_on_batch(x, y, return_dict=True)
    assert logs["task_loss"] == pytest.approx(plain["task_loss"], rel=1e-6)
    assert distiller.get_compile_config()["task_weight"] == 0.1


def test_task_weight_zero_trains_on_vid_alone(models, data):
    # Only the VID terms drive the student: its logits layer gets no gradient.
    x, y = data
    teacher, student = models
    distiller = VIDDistiller(teacher, student, pairs=CNN_PAIRS[:2])
    distiller.compile(optimizer=keras.optimizers.SGD(0.1), loss=CE, task_weight=0.0)
    logits_before = weights_of(student.get_layer("s_logits"))
    conv_before = weights_of(student.get_layer("s_conv1"))
    distiller.train_on_batch(x, y)
    assert not any(changed(logits_before, weights_of(student.get_layer("s_logits"))))
    assert all(changed(conv_before, weights_of(student.get_layer("s_conv1"))))


@pytest.mark.parametrize("clip", ["clipnorm", "global_clipnorm"])
def test_optimizer_gradient_clipping_applies_in_the_custom_step(models, data, clip):
    # Plain SGD with lr 1: a variable's update is minus its (clipped) gradient,
    # so the update norms show whether the optimizer clipped them.
    x, y = data
    limit = 1e-3

    def updates(**clipping):
        keras.utils.set_random_seed(0)
        teacher, student = small_cnn("t", 8), small_cnn("s", 4)
        distiller = VIDDistiller(teacher, student, pairs=CNN_PAIRS)
        distiller.compile(optimizer=keras.optimizers.SGD(1.0, **clipping), loss=CE)
        before = [to_numpy(v).copy() for v in distiller.trainable_variables]
        distiller.train_on_batch(x, y)
        after = [to_numpy(v) for v in distiller.trainable_variables]
        return [np.linalg.norm(a - b) for a, b in zip(after, before)]

    free = updates()
    clipped = updates(**{clip: limit})
    assert np.sqrt(np.sum(np.square(free))) > 100 * limit  # clipping has work to do
    if clip == "clipnorm":
        # Every tensor at most `limit`; those whose gradient was larger at it.
        assert max(clipped) <= limit * (1 + 1e-3)
        big = [c for f, c in zip(free, clipped) if f > limit]
        assert big and np.allclose(big, limit, rtol=1e-3)
    else:
        assert np.sqrt(np.sum(np.square(clipped))) == pytest.approx(limit, rel=1e-3)
        # Directions kept: each update shrinks by the same factor.
        ratios = [c / f for f, c in zip(free, clipped) if f > 0]
        np.testing.assert_allclose(ratios, ratios[0], rtol=1e-2)


def test_terms_match_heads_and_numpy_kd_with_sample_weights(models, data):
    x, y = data
    teacher, student = models
    distiller = make_distiller(models, kd_weight=1.0, temperature=3.0)
    w = np.random.default_rng(5).uniform(0, 2, size=len(x)).astype("float32")
    logs = distiller.test_on_batch(x, y, sample_weight=w, return_dict=True)

    s_feats = distiller.student_extractor.predict_on_batch(x)
    t_feats = distiller.teacher_extractor.predict_on_batch(x)
    for k, head in enumerate(distiller.heads):
        nll = ref.head_nll(head, s_feats[f"pair_{k}"], t_feats[f"pair_{k}"])
        assert logs[f"vid_{k}"] == pytest.approx(np.mean(nll * w), rel=1e-4)
    kd = ref.softened_kl(t_feats["logits"], s_feats["logits"], 3.0)
    assert logs["kd_loss"] == pytest.approx(np.mean(kd * w), rel=1e-4)
    ce = to_numpy(CE(y, s_feats["logits"], sample_weight=w))
    assert logs["task_loss"] == pytest.approx(float(ce), rel=1e-5)


def test_zero_sample_weight_examples_do_not_count(models, data):
    x, y = data
    distiller = make_distiller(models)
    w = np.r_[np.ones(16), np.zeros(16)].astype("float32")
    weighted = distiller.test_on_batch(x, y, sample_weight=w, return_dict=True)
    half = distiller.test_on_batch(x[:16], y[:16], return_dict=True)
    for name in ("vid_0", "vid_1", "vid_2", "task_loss"):
        assert weighted[name] == pytest.approx(half[name] / 2, rel=1e-4)


def test_class_weight_is_applied(models, data):
    x, y = data
    distiller = make_distiller(models, optimizer=keras.optimizers.SGD(0.0))
    plain = distiller.fit(x, y, batch_size=32, epochs=1, verbose=0, shuffle=False)
    weights = {c: 0.0 for c in range(5)}
    weights[int(y[0])] = 1.0
    weighted = distiller.fit(
        x, y, batch_size=32, epochs=1, verbose=0, shuffle=False, class_weight=weights
    )
    share = np.mean(y == y[0])
    assert weighted.history["vid_0"][0] < plain.history["vid_0"][0] * (share + 0.2)


def test_evaluate_changes_no_moving_statistics(models, data):
    x, y = data
    teacher, student = models
    distiller = make_distiller(models)
    distiller.fit(x, y, batch_size=16, epochs=1, verbose=0)
    before_s, before_t = bn_statistics(student), bn_statistics(teacher)
    before_heads = [weights_of(h) for h in distiller.heads]
    distiller.evaluate(x, y, verbose=0)
    assert not any(changed(before_s, bn_statistics(student)))
    assert not any(changed(before_t, bn_statistics(teacher)))
    for head, before in zip(distiller.heads, before_heads):
        assert not any(changed(before, weights_of(head)))


def test_student_and_teacher_run_once_per_step(data):
    x, y = data
    student_counter, teacher_counter = CallCounter(), CallCounter()
    keras.utils.set_random_seed(0)
    teacher = small_cnn("t", 8, counter=teacher_counter)
    student = small_cnn("s", 4, counter=student_counter)
    distiller = VIDDistiller(teacher, student, pairs=CNN_PAIRS)
    distiller.compile(optimizer="sgd", loss=CE, run_eagerly=True)
    # One student forward pass and one teacher forward pass per step.
    assert calls_per_step(distiller, x, y, batch_size=8) == [2] * 4


def test_alpha_is_excluded_from_weight_decay_by_default(models, data):
    x, y = data
    for include, should_move in ((False, False), (True, True)):
        keras.utils.set_random_seed(0)
        teacher, student = small_cnn("t", 8), small_cnn("s", 4)
        distiller = VIDDistiller(teacher, student, pairs=CNN_PAIRS)
        distiller.compile(
            optimizer=keras.optimizers.SGD(0.1, weight_decay=0.5),
            loss=CE,
            vid_weight=0.0,  # α gets no gradient: only weight decay could move it
            alpha_weight_decay=include,
        )
        before = [to_numpy(h.alpha).copy() for h in distiller.heads]
        distiller.fit(x, y, batch_size=32, epochs=1, verbose=0)
        moved = [not np.allclose(b, to_numpy(h.alpha)) for b, h in zip(before, distiller.heads)]
        assert all(moved) if should_move else not any(moved)


def test_predict_returns_student_outputs(models, data):
    x, _ = data
    distiller = make_distiller(models)
    np.testing.assert_allclose(
        distiller.predict(x, verbose=0), distiller.student.predict(x, verbose=0), rtol=1e-5
    )


def mlp(prefix, width, num_classes=3):
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(width, activation="relu", name=f"{prefix}_hidden")(inputs)
    return keras.Model(inputs, keras.layers.Dense(num_classes, name=f"{prefix}_logits")(hidden))


def test_jit_compiled_training(monkeypatch):
    if BACKEND == "torch":
        # Keras compiles the torch step with `torch.compile`. Inductor's C++
        # code generation takes minutes on a CPU, so trace with the
        # `aot_eager` backend: the same graph capture and autograd tracing.
        import functools

        import torch

        monkeypatch.setattr(
            torch, "compile", functools.partial(torch.compile, backend="aot_eager")
        )
    keras.utils.set_random_seed(0)
    distiller = VIDDistiller(
        mlp("t", 8), mlp("s", 4), pairs=[("s_hidden", "t_hidden"), ("s_hidden", "t_logits")]
    )
    distiller.compile(
        optimizer=keras.optimizers.SGD(0.1), loss=CE, kd_weight=0.5, jit_compile=True
    )
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(32, 6)).astype("float32"), rng.integers(0, 3, size=32)
    history = distiller.fit(x, y, batch_size=16, epochs=3, verbose=0).history
    assert np.all(np.isfinite(history["loss"]))
    assert history["loss"][-1] < history["loss"][0]


def test_distillation_without_labels_uses_vid_and_kd_only(models, data):
    x, _ = data
    distiller = VIDDistiller(*models, pairs=CNN_PAIRS)
    distiller.compile(optimizer="sgd", loss=CE, metrics=["accuracy"], kd_weight=1.0)
    logs = distiller.fit(x, batch_size=16, epochs=1, verbose=0).history
    assert logs["task_loss"] == [0.0]
    lambdas = to_numpy(distiller.vid_weights)  # compile's default λ per pair
    expected = sum(lambdas[k] * logs[f"vid_{k}"][0] for k in range(3)) + logs["kd_loss"][0]
    assert logs["loss"][0] == pytest.approx(expected, rel=1e-5)
    assert "accuracy" not in logs


def test_custom_heads_train_on_the_same_loop(models, data):
    x, y = data
    teacher, student = models
    heads = [
        VIDHead(learn_variance=False, init_variance=1.0, name=f"fitnet_{i}") for i in range(3)
    ]
    distiller = VIDDistiller(teacher, student, pairs=CNN_PAIRS, heads=heads)
    distiller.compile(optimizer="sgd", loss=CE)
    distiller.fit(x, y, batch_size=16, epochs=1, verbose=0)
    for head in distiller.heads:
        np.testing.assert_allclose(to_numpy(head.variance), 1.0, rtol=1e-5)
    clone = VIDDistiller.from_config(distiller.get_config())
    assert [h.name for h in clone.heads] == ["fitnet_0", "fitnet_1", "fitnet_2"]
    assert not clone.heads[0].learn_variance


def test_save_load_restores_everything_and_resumes_identically(models, data, tmp_path):
    x, y = data
    distiller = make_distiller(
        models, optimizer=keras.optimizers.Adam(1e-2), vid_weight=[1.0, 0.5, 2.0], kd_weight=0.3
    )
    distiller.fit(x, y, batch_size=16, epochs=1, verbose=0)
    path = tmp_path / "distiller.keras"
    distiller.save(path)
    loaded = keras.saving.load_model(path)

    assert isinstance(loaded, VIDDistiller) and loaded.compiled
    assert loaded.pairs == distiller.pairs
    assert loaded.get_compile_config()["vid_weight"] == [1.0, 0.5, 2.0]
    assert loaded.get_compile_config()["kd_weight"] == 0.3
    assert int(to_numpy(loaded.optimizer.iterations)) == 2
    for a, b in zip(distiller.weights, loaded.weights):
        np.testing.assert_array_equal(to_numpy(a), to_numpy(b))
    for a, b in zip(distiller.optimizer.variables, loaded.optimizer.variables):
        np.testing.assert_array_equal(to_numpy(a), to_numpy(b))

    first = distiller.train_on_batch(x[:16], y[:16], return_dict=True)
    second = loaded.train_on_batch(x[:16], y[:16], return_dict=True)
    assert second["loss"] == pytest.approx(first["loss"], rel=1e-5)
    nxt = distiller.train_on_batch(x[16:], y[16:], return_dict=True)
    nxt_loaded = loaded.train_on_batch(x[16:], y[16:], return_dict=True)
    assert nxt_loaded["loss"] == pytest.approx(nxt["loss"], rel=1e-4)
    assert isinstance(loaded.student, keras.Model) and not isinstance(loaded.student, VIDDistiller)


def test_student_saves_alone_without_heads(models, data, tmp_path):
    x, y = data
    distiller = make_distiller(models)
    distiller.fit(x, y, batch_size=16, epochs=1, verbose=0)
    distiller.student.save(tmp_path / "student.keras")
    student = keras.saving.load_model(tmp_path / "student.keras")
    assert not any("vid" in layer.name for layer in student.layers)
    np.testing.assert_allclose(
        student.predict(x, verbose=0), distiller.predict(x, verbose=0), rtol=1e-5
    )


# ------------------------------------------------------------------ bad input


class Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(5)

    def call(self, x):
        return self.dense(keras.ops.reshape(x, (-1, 8 * 8 * 3)))


@pytest.mark.parametrize(
    "pairs, match",
    [
        ([("s_g3", "t_g1")], r"no layer named 's_g3'.*Close matches: .*'s_g1'"),
        ([("s_g1", "t_gl")], r"teacher model 't' has no layer named 't_gl'"),
        ("s_g1", "list of"),
        ([("s_g1",)], "tuple"),
        ([("s_g1", "t_g1"), ("s_g1", "t_g1")], "appears twice"),
    ],
)
def test_bad_pairs_raise(models, pairs, match):
    with pytest.raises(ValueError, match=match):
        VIDDistiller(*models, pairs=pairs)


def test_unmappable_pair_names_the_pair(models):
    seq_teacher = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Reshape((64, 3), name="t_seq"),
            keras.layers.GlobalAveragePooling1D(),
            keras.layers.Dense(5),
        ],
        name="seq",
    )
    with pytest.raises(ValueError, match=r"Pair 0 \('s_g1', 't_seq'\).*rank-4 map cannot"):
        VIDDistiller(seq_teacher, models[1], pairs=[("s_g1", "t_seq")])


def test_subclassed_model_is_rejected(models):
    with pytest.raises(ValueError, match="no symbolic graph"):
        VIDDistiller(models[0], Subclassed(), pairs=[("dense", "t_g1")])


def test_input_shape_mismatch_is_rejected(models):
    other = small_cnn("s", 4, input_shape=(10, 10, 3))
    with pytest.raises(ValueError, match=r"same input shape.*\(None, 10, 10, 3\)"):
        VIDDistiller(models[0], other, pairs=[("s_g1", "t_g1")])


@pytest.mark.parametrize(
    "options, match",
    [
        ({"init_variance": 0.0}, "init_variance"),
        ({"epsilon": -1.0}, "epsilon"),
        ({"kernel": 3}, "Unknown head option"),
        ([{}, {}], "2 entries but there are 3 pairs"),
    ],
)
def test_bad_head_options_raise(models, options, match):
    with pytest.raises(ValueError, match=match):
        VIDDistiller(*models, pairs=CNN_PAIRS, head_options=options)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"vid_weight": [1.0, 2.0]}, "2 values but there are 3 pairs"),
        ({"vid_weight": -1.0}, "vid_weight"),
        ({"vid_weight": [1.0, -0.5, 1.0]}, r"vid_weight\[1\]"),
        ({"kd_weight": -0.1}, "kd_weight"),
        ({"temperature": 0}, "temperature"),
        ({"task_weight": -1.0}, "task_weight"),
    ],
)
def test_bad_compile_arguments_raise(models, kwargs, match):
    distiller = VIDDistiller(*models, pairs=CNN_PAIRS)
    with pytest.raises(ValueError, match=match):
        distiller.compile(optimizer="sgd", loss=CE, **kwargs)


def test_backend_is_the_one_under_test():
    assert keras.backend.backend() == BACKEND


def test_auto_pairs_resolve_to_stage_ends_and_are_saved(models):
    teacher, student = models
    distiller = VIDDistiller(teacher, student, pairs="auto")
    assert distiller.pairs == [("s_g1", "t_g1"), ("s_g2", "t_g2")]
    assert distiller.get_config()["pairs"] == [["s_g1", "t_g1"], ["s_g2", "t_g2"]]
    with pytest.raises(ValueError, match="`pairs` must be a list"):
        VIDDistiller(teacher, student, pairs="automatic")
