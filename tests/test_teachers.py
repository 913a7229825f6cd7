"""The committed teachers (results/teachers.json) and the airbench recipe that
trains the strong one: smoke runs on every backend, values against NumPy."""

import dataclasses
import json
import os

import keras
import numpy as np
import pytest
from conftest import to_numpy

import keras_vid  # noqa: F401  (registers the layers the saved teachers use)
from keras_vid.experiments.epoch_checkpoint import (
    checkpoint_dir,
    load_lookahead_state,
    load_progress,
    shards,
)
from keras_vid.experiments.fast_teacher import (
    RECIPES,
    AirbenchRecipe,
    WarmupLinearDecay,
    epoch_images,
    load_checkpoint,
    train_fast_teacher,
)
from keras_vid.experiments.lookahead import Lookahead
from keras_vid.experiments.models.airbench import PatchWhitening, airbench
from keras_vid.experiments.precision import POLICIES

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MANIFEST = os.path.join(ROOT, "results", "teachers.json")
CIFAR_TEST = os.path.join(ROOT, "..", "shared", "data", "cifar10_test.npz")
KEYS = {"name", "path", "dataset", "test_accuracy", "train_images", "epochs", "wall_time_s"}


def _entries():
    with open(MANIFEST) as f:
        return json.load(f)


@pytest.mark.parametrize("entry", _entries(), ids=lambda e: e["name"])
def test_manifest_teacher_loads_and_maps_raw_rgb_to_logits(entry):
    assert KEYS | {"command"} <= set(entry)
    path = os.path.join(ROOT, entry["path"])
    assert os.path.getsize(path) <= 50 * 2**20
    teacher = keras.saving.load_model(path, compile=False)
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, size=(4, 32, 32, 3)).astype("float32")
    logits = to_numpy(teacher.predict(images, verbose=0))
    assert logits.shape == (4, 10) and np.isfinite(logits).all()


def test_the_cnn_teacher_scores_its_manifest_accuracy():
    """Loading the file and predicting all 10 000 test images gives the
    manifest's single-view accuracy (the file is small enough to check it
    exactly on every backend)."""
    if not os.path.exists(CIFAR_TEST):
        pytest.skip(f"{CIFAR_TEST} is not on this machine")
    entry = next(e for e in _entries() if e["name"] == "cifar10-cnn-32-64-128-256")
    teacher = keras.saving.load_model(os.path.join(ROOT, entry["path"]), compile=False)
    with np.load(CIFAR_TEST) as f:
        x, y = f["x"].astype("float32"), f["y"]
    logits = teacher.predict(x, batch_size=1000, verbose=0)
    assert round(100 * np.mean(np.argmax(logits, -1) == y), 2) == pytest.approx(
        entry["test_accuracy"], abs=0.02
    )


def test_patch_whitening_decorrelates_patches():
    """The fixed kernel maps 2×2 patches to coordinates with covariance
    diag(λ / (λ + eps)) (and its negative half), from the eigenvectors of
    the patches' (uncentred) covariance."""
    rng = np.random.default_rng(0)
    base = rng.normal(size=(64, 9, 9, 3))
    images = base + 0.8 * np.roll(base, 1, axis=1) + 0.5 * base[..., :1]  # correlated pixels
    layer = PatchWhitening(2)
    layer.build((None, 9, 9, 3))
    layer.set_whitening(images, eps=5e-4)
    out = to_numpy(layer(images.astype("float32")))[:, :-1, :-1, :]  # valid 2×2 positions
    half = out[..., :12].reshape(-1, 12).astype("float64")
    covariance = half.T @ half / len(half)
    patches = np.stack(
        [images[:, i : 8 + i, j : 8 + j, :] for i in range(2) for j in range(2)], axis=3
    ).reshape(-1, 12)
    eigenvalues = np.sort(np.linalg.eigvalsh(patches.T @ patches / len(patches)))[::-1]
    np.testing.assert_allclose(covariance, np.diag(eigenvalues / (eigenvalues + 5e-4)), atol=2e-3)
    np.testing.assert_allclose(out[..., 12:], -out[..., :12], atol=1e-5)


def test_epoch_images_alternate_flips_and_shift_by_at_most_the_translation():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 255, size=(10, 8, 8, 3)).astype("uint8")
    even, odd = epoch_images(images, 0, translate=0), epoch_images(images, 1, translate=0)
    np.testing.assert_array_equal(odd, even[:, :, ::-1])
    np.testing.assert_array_equal(epoch_images(images, 2, translate=0), even)
    shifted = epoch_images(images, 3, translate=2, seed=5)
    np.testing.assert_array_equal(shifted, epoch_images(images, 3, translate=2, seed=5))
    unshifted = epoch_images(images, 3, translate=0, seed=5)
    padded = np.pad(unshifted, ((0, 0), (2, 2), (2, 2), (0, 0)), mode="reflect")
    for k in range(len(images)):  # each image is one of the 25 crops of its padded self
        crops = [padded[k, a : a + 8, b : b + 8] for a in range(5) for b in range(5)]
        assert any(np.array_equal(shifted[k], c) for c in crops)


def test_epoch_images_cut_out_one_square_of_the_fill_value():
    """Cutout comes after the flips and shifts: with it, each image is the
    same image with one `cutout`×`cutout` square set to `fill`."""
    rng = np.random.default_rng(2)
    images = rng.integers(10, 250, size=(12, 10, 10, 3)).astype("uint8")
    plain = epoch_images(images, 3, translate=2, seed=5)
    cut = epoch_images(images, 3, translate=2, seed=5, cutout=4, fill=(1, 2, 3))
    for k in range(len(images)):
        squares = []
        for top in range(7):
            for left in range(7):
                expected = plain[k].copy()
                expected[top : top + 4, left : left + 4] = (1, 2, 3)
                squares.append(np.array_equal(cut[k], expected))
        assert sum(squares) == 1


def test_lookahead_matches_its_closed_form():
    """Every 5 steps the weights become ema + (1 − d)(w − ema) with
    d = 0.95⁵ (step/total)³; the last step sets them to the average."""
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, use_bias=False)])
    kernel = model.layers[0].kernel
    kernel.assign(np.zeros((2, 1), "float32"))
    lookahead = Lookahead(model, total_steps=10, every=5)
    average = np.zeros((2, 1))
    for step in range(1, 11):
        w = np.full((2, 1), float(step))  # what an optimizer step would leave
        kernel.assign(w.astype("float32"))
        lookahead.after_step(step)
        if step == 5:
            average += (1 - 0.95**5 * 0.5**3) * (w - average)
            w = average
        if step == 10:
            w = average
        np.testing.assert_allclose(to_numpy(kernel), w, rtol=1e-6)
    restored = Lookahead(model, total_steps=10)
    restored.restore(lookahead.state())
    np.testing.assert_allclose(restored.average[0], average, rtol=1e-6)


def test_residual_airbench_adds_each_group_input_to_its_last_two_convs():
    teacher = airbench((8, 16, 16), residual=True)
    probe = keras.Model(
        teacher.input,
        [teacher.get_layer(n).output for n in ("block2_act1", "block2_shift3", "block2_residual")],
    )
    x = np.random.default_rng(0).uniform(0, 255, size=(2, 32, 32, 3)).astype("float32")
    first, last, summed = (to_numpy(t) for t in probe(x))
    np.testing.assert_allclose(summed, first + last, rtol=1e-5, atol=1e-5)
    assert teacher.name == "airbench_8_16_16_res" and teacher.output.shape == (None, 10)


def test_warmup_linear_decay_closed_form():
    schedule = WarmupLinearDecay(2.0, total_steps=100, warmup_fraction=0.2, start=0.2, end=0.1)
    values = [float(to_numpy(schedule(s))) for s in (0, 10, 20, 60, 100)]
    np.testing.assert_allclose(values, [0.4, 1.2, 2.0, 2.0 * (1 - 0.9 * 0.5), 0.2], rtol=1e-6)
    clone = WarmupLinearDecay.from_config(schedule.get_config())
    assert float(to_numpy(clone(50))) == pytest.approx(float(to_numpy(schedule(50))))


def test_recipe_trains_resumes_and_saves_a_float32_raw_rgb_teacher(tmp_path):
    """Two epochs in two runs of the same function: the second resumes after
    the first epoch. Convolutions and shifts move, the whitening kernel does
    not, and the saved teacher reads raw RGB in float32 on any backend."""
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, size=(96, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, size=96)
    output = str(tmp_path / "teacher.keras")
    recipe = AirbenchRecipe(widths=(8, 16, 16), epochs=1, batch_size=32, whitening_images=64)
    quiet = lambda m: None  # noqa: E731
    train_fast_teacher(
        output, x, y, x[:16], y[:16], recipe=recipe, dtype_policy="mixed_bfloat16", log=quiet
    )
    saved = sorted(os.listdir(checkpoint_dir(output)))
    assert "model.weights.json" in saved and saved[-1] == "progress.json"
    first = load_checkpoint(output, recipe, 10, (32, 32, 3), 3)
    assert int(to_numpy(first.optimizer.iterations)) == 3  # 96 images, batch 32
    momentum = [to_numpy(v) for v in first.optimizer.variables if "momentum" in v.path]
    assert momentum and any(np.abs(m).max() > 0 for m in momentum)  # restored, not fresh
    start = {w.path: to_numpy(w).copy() for w in first.weights}
    recipe = AirbenchRecipe(widths=(8, 16, 16), epochs=2, batch_size=32, whitening_images=64)
    messages = []
    record = train_fast_teacher(
        output, x, y, x[:16], y[:16], recipe=recipe, dtype_policy="float32", log=messages.append
    )
    assert any("resuming" in m and "after epoch 1" in m for m in messages)
    assert len(record["epoch_seconds"]) == 2 and record["epochs"] == 2
    # Resumed in another precision (another machine's fastest): each epoch's is kept.
    assert record["epoch_dtype_policies"] == ["mixed_bfloat16", "float32"]
    teacher = keras.saving.load_model(output, compile=False)
    assert all(w.dtype == "float32" for w in teacher.weights)
    after = {
        w.path: to_numpy(w) for w in load_checkpoint(output, recipe, 10, (32, 32, 3), 6).weights
    }
    whitening = [p for p in start if "whiten" in p and "kernel" in p]
    moved = [p for p in start if "conv" in p or "shift" in p]
    assert whitening and moved
    for path in whitening:
        np.testing.assert_array_equal(after[path], start[path])
    assert all(not np.allclose(after[p], start[p]) for p in moved)
    logits = to_numpy(teacher.predict(x[:4], verbose=0))
    assert logits.shape == (4, 10) and np.isfinite(logits).all()


def test_airbench96_recipe_trains_and_resumes_with_its_lookahead(tmp_path):
    """The residual recipe (cutout, Lookahead, decay to zero) runs two epochs
    in two calls; the second restores the Lookahead average. Resuming with
    another recipe is refused with the settings that differ."""
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, size=(64, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, size=64)
    output = str(tmp_path / "new" / "t96.keras")  # its folder is made before training
    small = {"widths": (8, 16, 16), "batch_size": 32, "whitening_images": 64}
    recipe = dataclasses.replace(RECIPES["airbench96"], epochs=1, **small)
    train_fast_teacher(
        output, x, y, x[:8], y[:8], recipe=recipe, dtype_policy="float32", log=lambda m: None
    )
    assert os.path.exists(os.path.join(checkpoint_dir(output), "lookahead_00000.npz"))
    with pytest.raises(ValueError, match="residual"):
        other = dataclasses.replace(RECIPES["airbench94"], epochs=2, **small)
        train_fast_teacher(
            output, x, y, x[:8], y[:8], recipe=other, dtype_policy="float32", log=lambda m: None
        )
    recipe = dataclasses.replace(recipe, epochs=2)
    messages = []
    record = train_fast_teacher(
        output, x, y, x[:8], y[:8], recipe=recipe, dtype_policy="float32", log=messages.append
    )
    assert any("after epoch 1" in m for m in messages) and record["recipe"]["cutout"] == 12
    teacher = keras.saving.load_model(output, compile=False)
    assert "block3_residual" in {layer.name for layer in teacher.layers}
    state = load_lookahead_state(output)  # the last step set the average
    lookahead_kernel = [a for a in state.values() if a.shape == (3, 3, 16, 16)]
    kernels = [to_numpy(w) for w in teacher.weights if tuple(w.shape) == (3, 3, 16, 16)]
    assert len(kernels) == len(lookahead_kernel) > 0
    for saved, average in zip(kernels, lookahead_kernel):
        np.testing.assert_allclose(saved, average, rtol=1e-6)


def test_a_run_stopped_inside_epochs_resumes_to_the_uninterrupted_teacher(tmp_path):
    """Checkpoints every step and a spent time budget stop the residual recipe
    (Lookahead, cutout) after each step; calling it again until it finishes
    gives the teacher, Lookahead average and epoch losses of a run never
    stopped, with each epoch's seconds counted once."""
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, size=(96, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, size=96)
    small = {"widths": (8, 16, 16), "batch_size": 32, "whitening_images": 64, "epochs": 2}
    recipe = dataclasses.replace(RECIPES["airbench96"], **small)
    quiet = lambda m: None  # noqa: E731
    whole = str(tmp_path / "whole.keras")
    expected = train_fast_teacher(
        whole, x, y, x[:8], y[:8], recipe=recipe, dtype_policy="float32", log=quiet
    )
    stopped = str(tmp_path / "stopped.keras")
    calls, messages, record = 0, [], None
    while record is None:
        calls += 1
        assert calls <= 6, "the run does not advance"
        record = train_fast_teacher(
            stopped, x, y, x[:8], y[:8], recipe=recipe, dtype_policy="float32",
            log=messages.append, checkpoint_steps=1, time_budget_s=0,
        )  # fmt: skip
        if record is None:
            assert not os.path.exists(stopped)  # no teacher before the last step
    assert calls == 6  # 2 epochs of 3 steps, one step per call
    assert any("after epoch 0/2 and step 2/3 of the next" in m for m in messages)
    assert any("after epoch 1/2 and step 1/3 of the next" in m for m in messages)
    assert len(record["epoch_seconds"]) == 2
    for got, want in zip(record["history"], expected["history"]):
        assert got["loss"] == pytest.approx(want["loss"], rel=1e-4)
    a = keras.saving.load_model(whole, compile=False)
    b = keras.saving.load_model(stopped, compile=False)
    for wa, wb in zip(a.weights, b.weights):
        np.testing.assert_allclose(to_numpy(wb), to_numpy(wa), rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="Received: checkpoint_steps=0"):
        train_fast_teacher(stopped, x, y, x[:8], y[:8], recipe=recipe, checkpoint_steps=0)


def test_airbench_stage_ends_pair_with_a_small_student():
    teacher = airbench((8, 16, 16))
    names = [layer.name for layer in teacher.layers]
    for k in (1, 2, 3):
        assert f"block{k}" in names and f"block{k}_shift2" in names
    assert teacher.output.shape == (None, 10)


@pytest.mark.parametrize("residual", [False, True], ids=["airbench94", "residual"])
def test_the_cli_feeds_an_airbench_teacher_its_normalised_images(tmp_path, residual):
    """`--teacher airbench-… --teacher-model T.keras`: the loaded raw-RGB
    teacher is adapted to the CLI's `(x / 255 − mean) / std` images and
    computes on them what the saved file computes on the raw images; the
    file's own record beside it is left alone; without a file the CLI says
    how to train one."""
    from keras_vid.experiments.architectures import parse_architecture
    from keras_vid.experiments.data import channel_stats
    from keras_vid.experiments.runner import DataConfig, Dataset, get_teacher

    rng = np.random.default_rng(0)
    raw = rng.integers(0, 256, size=(40, 32, 32, 3)).astype("uint8")
    labels = rng.integers(0, 10, size=40)
    saved = airbench((8, 16, 16), residual=residual, seed=3)
    spec = "airbench-res-8,16,16" if residual else "airbench-8,16,16"
    normalize = saved.get_layer("normalize")
    saved.get_layer("whiten").set_whitening(to_numpy(normalize(raw[:32].astype("float32"))))
    path = str(tmp_path / "airbench.keras")
    saved.save(path)
    with open(path + ".json", "w") as f:
        json.dump({"test_accuracy": 12.5}, f)
    mean, std = channel_stats(raw)
    data = Dataset(raw, labels, raw, labels, [str(c) for c in range(10)], mean, std)
    teacher, info = get_teacher(
        spec, DataConfig(), None, data, str(tmp_path), log=lambda m: None, path=path
    )
    normalised = ((raw[:8] / 255.0 - mean) / std).astype("float32")
    expected = to_numpy(saved.predict(raw[:8].astype("float32"), verbose=0))
    got = to_numpy(teacher.predict(normalised, verbose=0))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    names = {layer.name for layer in teacher.layers}
    pre_activation = parse_architecture(spec).pre_activation_stages[-1]
    assert {"block1", pre_activation, "pool", "logits"} <= names
    raw_logits = to_numpy(saved.predict(raw.astype("float32"), verbose=0))
    assert info["test_accuracy"] == pytest.approx(100.0 * np.mean(raw_logits.argmax(-1) == labels))
    with open(path + ".json") as f:
        assert json.load(f) == {"test_accuracy": 12.5}
    with pytest.raises(ValueError, match="fast_teacher" + (" --recipe airbench96" * residual)):
        get_teacher(spec, DataConfig(), None, data, str(tmp_path))


def test_fast_teacher_command_trains_with_the_label_smoothing_it_is_given(tmp_path):
    from keras_vid.experiments.fast_teacher import main

    rng = np.random.default_rng(0)
    for split, n in (("train", 64), ("test", 16)):
        x = rng.integers(0, 256, size=(n, 32, 32, 3)).astype("uint8")
        np.savez(tmp_path / f"{split}.npz", x=x, y=np.arange(n) % 10)
    output = str(tmp_path / "t.keras")
    argv = ["--output", output, "--train", str(tmp_path / "train.npz"), "--widths", "8,16,16"]
    argv += ["--test", str(tmp_path / "test.npz"), "--epochs", "1", "--batch-size", "32"]
    record = main(argv + ["--label-smoothing", "0"])
    assert record["recipe"]["label_smoothing"] == 0.0 and record["epochs"] == 1
    # The default precision is the one measured fastest on this machine.
    assert record["dtype_policy"] in POLICIES and record["epoch_dtype_policies"] == [
        record["dtype_policy"]
    ]
    assert load_progress(output)["recipe"]["label_smoothing"] == 0.0  # what a resume uses


def test_a_checkpoint_whose_files_disagree_is_refused(tmp_path):
    """Weights and optimizer state from one epoch, a record from another: the
    resume stops with the files named instead of training from a mixture."""
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, size=(64, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, size=64)
    output = str(tmp_path / "teacher.keras")
    recipe = AirbenchRecipe(widths=(8, 16, 16), epochs=1, batch_size=32, whitening_images=64)
    train_fast_teacher(
        output, x, y, x[:8], y[:8], recipe=recipe, dtype_policy="float32", log=lambda m: None
    )
    progress = os.path.join(checkpoint_dir(output), "progress.json")
    with open(progress) as f:
        record = json.load(f)
    record["epochs_done"] = 0
    with open(progress, "w") as f:
        json.dump(record, f)
    with pytest.raises(ValueError, match="at step 2, but .* records 0 epochs"):
        recipe = dataclasses.replace(recipe, epochs=2)
        train_fast_teacher(
            output, x, y, x[:8], y[:8], recipe=recipe, dtype_policy="float32", log=lambda m: None
        )


def test_checkpoint_files_stay_small_and_a_cut_short_swap_is_completed(tmp_path):
    """Arrays are grouped into files of at most the shard size, in order; a
    crash between the two renames of an epoch's swap leaves the previous
    folder as `.ckpt.old`, which the next run takes back."""
    arrays = [np.zeros(n, "float32") for n in (10, 10, 30, 5, 40)]  # 40, 40, 120, 20, 160 B
    groups = shards(arrays, 100)
    assert [[a.size for a in g] for g in groups] == [[10, 10], [30], [5], [40]]
    output = str(tmp_path / "t.keras")
    os.makedirs(checkpoint_dir(output) + ".old")
    with open(os.path.join(checkpoint_dir(output) + ".old", "progress.json"), "w") as f:
        json.dump({"epochs_done": 3}, f)
    assert load_progress(output) == {"epochs_done": 3}
    assert os.path.isdir(checkpoint_dir(output))
    assert load_progress(str(tmp_path / "none.keras")) is None
