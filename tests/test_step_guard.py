"""Non-finite data and bad labels: the step is skipped, the state is kept, the culprit named."""

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import BACKEND, CNN_PAIRS, small_cnn, to_numpy

from keras_vid import VIDDistiller
from keras_vid.callbacks import NonFiniteMonitor

CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
GUARD = ("skipped_steps", "last_skip_flags", "last_skipped_step")


def fresh_distiller(seed=0, optimizer=None):
    keras.utils.set_random_seed(seed)
    distiller = VIDDistiller(small_cnn("t", 8), small_cnn("s", 4), pairs=CNN_PAIRS)
    distiller.compile(optimizer=optimizer or keras.optimizers.Adam(1e-2), loss=CE, kd_weight=0.5)
    distiller.optimizer.build(distiller.trainable_variables)  # slots exist before any step
    distiller.calibrate(batches(8)[0])  # teacher statistics fixed before any step
    return distiller


def batches(n=32):
    rng = np.random.default_rng(0)
    return rng.random((n, 8, 8, 3)).astype("float32"), rng.integers(0, 5, size=n)


def state(distiller):
    """Every weight except the guard's own record, and every optimizer slot."""
    weights = [v for v in distiller.weights if v.name not in GUARD]
    return [to_numpy(v).copy() for v in weights + distiller.optimizer.variables]


def assert_same_state(a, b, exact=True):
    assert len(a) == len(b)
    for before, after in zip(a, b):
        if exact:
            np.testing.assert_array_equal(before, after)
        else:  # another run fed the same batches (arrays vs tf.data)
            np.testing.assert_allclose(before, after, rtol=1e-5, atol=1e-6)


def guard_record(distiller):
    return (
        int(to_numpy(distiller.step_guard.skipped_steps)),
        to_numpy(distiller.step_guard.last_skip_flags).tolist(),
        int(to_numpy(distiller.step_guard.last_skipped_step)),
    )


def fit_recording_warnings(distiller, *args, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = distiller.fit(*args, verbose=0, **kwargs)
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    return history, messages


def test_nan_input_batch_is_skipped_and_named():
    x, y = batches()
    distiller = fresh_distiller()
    distiller.fit(x, y, batch_size=8, epochs=1, verbose=0)  # 4 good steps: optimizer built
    before = state(distiller)
    bad = x[:8].copy()
    bad[3, 2, 2, 0] = np.nan
    history, messages = fit_recording_warnings(distiller, bad, y[:8], batch_size=8)

    assert_same_state(before, state(distiller))  # student, heads, α, BN stats, optimizer
    assert np.isnan(history.history["loss"][0])
    assert int(to_numpy(distiller.optimizer.iterations)) == 4
    count, flags, step = guard_record(distiller)
    assert (count, step) == (1, 4)
    assert flags[0] == 1 and flags[1] == 0  # input at fault, labels fine
    assert len(messages) == 1
    assert messages[0].startswith(
        "vid_distiller: 1 training step(s) skipped in epoch 1 (the loss first turned "
        "non-finite at batch 1); the latest, step 4: the input batch contains NaN or Inf"
    )

    # A good batch afterwards trains normally.
    history = distiller.fit(x[:8], y[:8], batch_size=8, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert int(to_numpy(distiller.optimizer.iterations)) == 5


def test_non_finite_teacher_feature_names_the_pair():
    x, y = batches(16)
    distiller = fresh_distiller()
    conv = distiller.teacher.get_layer("t_conv2")
    kernel = to_numpy(conv.kernel).copy()
    kernel[0, 0, 0, 0] = np.inf  # the teacher's second stage turns non-finite
    conv.kernel.assign(kernel)
    before = state(distiller)
    _, messages = fit_recording_warnings(distiller, x, y, batch_size=8)

    assert_same_state(before, state(distiller))
    count, flags, _ = guard_record(distiller)
    assert count == 2
    # [input, labels, teacher logits, pair 0, pair 1, pair 2, loss/gradients]
    assert flags[:2] == [0, 0] and flags[3] == 0 and flags[4] == 1
    assert len(messages) == 2  # one report per epoch, and the stop: no step trained
    assert messages[0].startswith("vid_distiller: 2 training step(s) skipped in epoch 1")
    assert "every step of epoch 1 (2) was skipped" in messages[1]
    assert "pair 1 ('s_g2' ← 't_g2') contains NaN or Inf" in messages[0]
    assert "pair 0" not in messages[0] and "input batch" not in messages[0]


def test_terminate_on_nan_stops_with_the_weights_of_the_last_good_step():
    x, y = batches()
    x_bad = x.copy()
    x_bad[17] = np.inf  # third batch of 8
    reference = fresh_distiller()
    reference.fit(x[:16], y[:16], batch_size=8, epochs=1, verbose=0, shuffle=False)

    distiller = fresh_distiller()
    history, messages = fit_recording_warnings(
        distiller,
        x_bad,
        y,
        batch_size=8,
        epochs=3,
        shuffle=False,
        callbacks=[keras.callbacks.TerminateOnNaN()],
    )
    assert len(history.history["loss"]) == 1 and np.isnan(history.history["loss"][0])
    assert distiller.stop_training
    assert_same_state(state(reference), state(distiller))
    assert int(to_numpy(distiller.optimizer.iterations)) == 2
    assert guard_record(distiller)[0] == 1
    assert any("at batch 3); the latest, step 2: the input batch" in m for m in messages)


@pytest.mark.parametrize("action", ["stop", "raise"])
def test_monitor_actions(action):
    x, y = batches(16)
    x[1, 0, 0, 0] = np.nan
    distiller = fresh_distiller()
    monitor = NonFiniteMonitor(action)
    if action == "raise":
        with pytest.raises(FloatingPointError, match="input batch contains NaN"):
            distiller.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[monitor])
    else:
        with pytest.warns(RuntimeWarning, match="input batch contains NaN"):
            history = distiller.fit(
                x, y, batch_size=8, epochs=2, verbose=0, shuffle=False, callbacks=[monitor]
            )
        assert len(history.history["loss"]) == 1 and distiller.stop_training
    assert guard_record(distiller)[0] == 1


def test_an_epoch_with_every_step_skipped_stops_training_and_names_the_terms():
    """Weights that make a VID term overflow skip every step: the run stops
    after the first such epoch instead of skipping on, and says which term."""
    x, y = batches(16)
    distiller = fresh_distiller()
    head = distiller.heads[0]
    for weight in head.trainable_weights:
        if "kernel" in weight.path:
            weight.assign(np.full(weight.shape, 1e20, "float32"))
    before = state(distiller)
    history, messages = fit_recording_warnings(distiller, x, y, batch_size=8, epochs=4)

    assert len(history.history["loss"]) == 1 and distiller.stop_training
    assert_same_state(before, state(distiller))
    assert guard_record(distiller)[0] == 2
    stops = [m for m in messages if "every step of epoch 1 (2) was skipped" in m]
    assert len(stops) == 1
    assert "Not finite in the epoch's logs: loss, vid_0." in stops[0]
    assert "vid_1" not in stops[0] and "task_loss" not in stops[0]


def test_an_epoch_with_some_steps_trained_goes_on():
    x, y = batches(16)
    x[1, 0, 0, 0] = np.nan  # the first of each epoch's two batches
    distiller = fresh_distiller()
    history, messages = fit_recording_warnings(
        distiller, x, y, batch_size=8, epochs=3, shuffle=False
    )
    assert len(history.history["loss"]) == 3 and not distiller.stop_training
    assert guard_record(distiller)[0] == 3
    assert not any("every step" in m for m in messages)


def test_warning_monitor_is_async_safe_and_the_others_are_not():
    """The default monitor must not force a device sync per batch."""
    assert NonFiniteMonitor().async_safe
    assert not NonFiniteMonitor("stop").async_safe
    assert not NonFiniteMonitor("raise").async_safe


def test_monitor_rejects_unknown_action():
    with pytest.raises(ValueError, match="`action` must be one of"):
        NonFiniteMonitor("ignore")


def test_labels_out_of_range_in_arrays_fail_before_training():
    x, y = batches(16)
    distiller = fresh_distiller()
    before = state(distiller)
    with pytest.raises(ValueError, match=r"labels in \[0, 7\].*5 output classes"):
        distiller.fit(x, np.where(np.arange(16) == 3, 7, y), verbose=0)
    with pytest.raises(ValueError, match=r"labels in \[-1, 4\]"):
        distiller.evaluate(x, np.where(np.arange(16) == 3, -1, y), verbose=0)
    assert_same_state(before, state(distiller))


def test_labels_out_of_range_in_a_dataset_skip_the_step_on_every_backend():
    """TensorFlow and PyTorch would raise inside the loss, JAX would train on
    a wrong class: instead the batch's loss is NaN and the step is skipped."""
    x, y = batches(16)
    y = np.where(np.arange(16) == 10, 5, y)  # second batch holds class 5 of 0..4
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    distiller = fresh_distiller()
    reference = fresh_distiller()
    reference.fit(x[:8], y[:8], batch_size=8, verbose=0)
    history, messages = fit_recording_warnings(distiller, ds)

    assert np.isnan(history.history["task_loss"][0])
    assert_same_state(state(reference), state(distiller), exact=False)
    count, flags, step = guard_record(distiller)
    assert (count, step, flags[1]) == (1, 1, 1)
    assert flags[0] == 0 and flags[2:6] == [0, 0, 0, 0]
    assert "not whole numbers in [0, number of classes)" in messages[0]


def test_guard_leaves_finite_training_unchanged():
    """With finite data the guard records nothing and training matches a
    distiller trained the same way (fit and train_on_batch agree)."""
    x, y = batches(16)
    a, b = fresh_distiller(), fresh_distiller()
    _, messages = fit_recording_warnings(a, x, y, batch_size=8, shuffle=False)
    for start in (0, 8):
        b.train_on_batch(x[start : start + 8], y[start : start + 8])
    assert messages == []
    assert guard_record(a) == (0, [0] * 7, 0)
    for wa, wb in zip(state(a), state(b)):
        np.testing.assert_allclose(wa, wb, rtol=1e-5, atol=1e-6)


def test_same_layer_in_two_pairs_trains_one_head_each():
    """A layer may appear in several pairs (one student feature predicting two
    teacher stages, or two student stages predicting one teacher feature);
    only an exact repeated pair is an error."""
    x, y = batches(16)
    keras.utils.set_random_seed(0)
    pairs = [("s_g2", "t_g1"), ("s_g2", "t_g2"), ("s_g1", "t_g2")]
    distiller = VIDDistiller(small_cnn("t", 8), small_cnn("s", 4), pairs=pairs)
    distiller.compile(optimizer="sgd", loss=CE)
    alphas = [to_numpy(h.alpha).copy() for h in distiller.heads]
    history = distiller.fit(x, y, batch_size=8, verbose=0)
    assert len(distiller.heads) == 3
    assert [k for k in history.history if k.startswith("vid_")] == ["vid_0", "vid_1", "vid_2"]
    for head, alpha in zip(distiller.heads, alphas):
        assert not np.allclose(to_numpy(head.alpha), alpha)
    with pytest.raises(ValueError, match="appears twice"):
        VIDDistiller(small_cnn("t", 8), small_cnn("s", 4), pairs=pairs + [pairs[0]])


def finite_groups_cases():
    nan, inf = float("nan"), float("inf")
    rng = np.random.default_rng(0)
    clean = rng.normal(size=(3, 4, 4, 2)).astype("float32")
    with_nan, with_inf, with_minus_inf = clean.copy(), clean.copy(), clean.copy()
    with_nan[1, 2, 3, 0] = nan
    with_inf[0, 0, 0, 1] = inf
    with_minus_inf[2, 3, 1, 1] = -inf
    huge = np.full((5,), 3e38, "float32")  # finite, though its sum would overflow
    labels = np.arange(3, dtype="int32")
    return [
        clean,
        {"a": clean, "b": with_nan},
        [with_inf, None],
        with_minus_inf,
        huge,
        labels,  # no float tensor: finite
        [],
        [np.float32(nan)],
        [np.float32(1.0), clean[0, 0]],
    ]


def finite_groups_tensor_cases():
    """`finite_groups_cases` as backend tensors."""
    to_tensor = keras.ops.convert_to_tensor
    return [
        keras.tree.map_structure(lambda v: None if v is None else to_tensor(v), g)
        for g in finite_groups_cases()
    ]


def test_finite_groups_flags_exactly_the_groups_with_nan_or_inf():
    from keras_vid.step_guard import finite_groups

    groups = finite_groups_tensor_cases()
    expected = [True, False, False, False, True, True, True, False, True]
    assert to_numpy(finite_groups(groups)).tolist() == expected


@pytest.mark.skipif(BACKEND != "torch", reason="the PyTorch trainer's fused check")
def test_torch_fused_finite_groups_matches_keras_ops_version():
    from keras_vid.backend.torch_trainer import finite_groups as fused_finite_groups
    from keras_vid.step_guard import finite_groups

    groups = finite_groups_tensor_cases()
    expected = to_numpy(finite_groups(groups)).tolist()
    assert to_numpy(fused_finite_groups(groups)).tolist() == expected
    # NumPy inputs (as `train_on_batch` may pass them) give the same answer.
    assert to_numpy(fused_finite_groups(finite_groups_cases())).tolist() == expected
