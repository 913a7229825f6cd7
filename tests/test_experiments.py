"""The experiment layer: AT head, recipes, and the command line end to end."""

import json
import os

import keras
import numpy as np
import pytest

from keras_vid import VIDDistiller, VIDHead
from keras_vid.experiments import (
    METHODS,
    AttentionTransferHead,
    MethodConfig,
    build_method,
    parse_architecture,
    stage_pairs,
)
from keras_vid.experiments.cli import main
from keras_vid.experiments.report import markdown_table, summarize


def _attention(x):
    a = np.mean(np.square(x), axis=-1).reshape(len(x), -1)
    return a / np.linalg.norm(a, axis=-1, keepdims=True)


def test_attention_transfer_head_matches_numpy():
    rng = np.random.default_rng(0)
    s = rng.normal(size=(3, 4, 4, 2)).astype("float32")
    t = rng.normal(size=(3, 4, 4, 5)).astype("float32")
    head = AttentionTransferHead()
    head.build(s.shape, t.shape)
    loss = keras.ops.convert_to_numpy(head(s, t))
    expected = np.mean(np.square(_attention(s) - _attention(t)), axis=-1)
    np.testing.assert_allclose(loss, expected, rtol=1e-5, atol=1e-7)
    assert keras.ops.convert_to_numpy(head(t, t)).max() < 1e-10


def test_attention_transfer_head_pools_the_larger_map():
    rng = np.random.default_rng(1)
    s = rng.normal(size=(2, 2, 2, 3)).astype("float32")
    t = rng.normal(size=(2, 4, 4, 3)).astype("float32")
    head = AttentionTransferHead()
    head.build(s.shape, t.shape)
    energy = np.mean(np.square(t), axis=-1).reshape(2, 2, 2, 2, 2).mean(axis=(2, 4))
    pooled = energy.reshape(2, -1)
    pooled = pooled / np.linalg.norm(pooled, axis=-1, keepdims=True)
    expected = np.mean(np.square(_attention(s) - pooled), axis=-1)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(head(s, t)), expected, rtol=1e-5)
    with pytest.raises(ValueError, match="feature map"):
        AttentionTransferHead().build((2, 3), (2, 4, 4, 3))


@pytest.fixture(scope="module")
def models():
    t_arch, s_arch = parse_architecture("cnn-6,8"), parse_architecture("cnn-3,4")
    return t_arch, s_arch, t_arch.build(10, (8, 8, 1)), s_arch.build(10, (8, 8, 1))


@pytest.mark.parametrize("method", METHODS)
def test_recipes(method, models):
    t_arch, s_arch, teacher, student = models
    config = MethodConfig(vid_weight=2.0, at_weight=500.0, kd_weight=0.5)
    model, kwargs = build_method(method, teacher, student, t_arch, s_arch, config)
    if method == "student":
        assert model is student and kwargs == {}
        return
    assert isinstance(model, VIDDistiller) and model.student is student
    stages = [("block1", "block1"), ("block2", "block2")]
    expected = {
        "kd": ([], 0.0, 0.5),
        "fitnet": (stages, MethodConfig().fitnet_weight, 0.0),  # its own default, not λ
        "at": (stages, 500.0, 0.0),
        "vid-i": (stages, 2.0, 0.0),
        "vid-lp": ([("pool", "logits")], 2.0, 0.0),
        "kd+vid-i": (stages, 2.0, 0.5),
    }[method]
    assert model.pairs == expected[0]
    assert kwargs.get("vid_weight", 0.0) == expected[1] and kwargs["kd_weight"] == expected[2]
    if method == "fitnet":
        assert all(not h.learn_variance and h.init_variance == 1.0 for h in model.heads)
    if method == "at":
        assert all(isinstance(h, AttentionTransferHead) for h in model.heads)
    if method in ("vid-i", "kd+vid-i", "vid-lp"):
        assert all(isinstance(h, VIDHead) and h.learn_variance for h in model.heads)


def test_stage_pairs_for_an_mlp_student_use_the_last_teacher_stages():
    pairs = stage_pairs(parse_architecture("mlp-8,8"), parse_architecture("cnn-2,4,6"))
    assert pairs == [("hidden1", "block2"), ("hidden2", "block3")]


def test_stage_pairs_at_the_pre_activation_point():
    cnn_s, cnn_t = parse_architecture("cnn-2,4x2"), parse_architecture("cnn-3,5,7")
    assert stage_pairs(cnn_s, cnn_t, "pre-activation") == [
        ("block1_bn2", "block2_bn1"),
        ("block2_bn2", "block3_bn1"),
    ]
    # A pre-activation WRN's group outputs are the residual stream already.
    wrn = parse_architecture("wrn-16-1")
    assert stage_pairs(wrn, wrn, "pre-activation") == stage_pairs(wrn, wrn)
    with pytest.raises(ValueError, match="No pre-activation stage layers"):
        stage_pairs(parse_architecture("mlp-8"), cnn_t, "pre-activation")
    with pytest.raises(ValueError, match="feature_point"):
        stage_pairs(cnn_s, cnn_t, "post")


def test_summary_and_table():
    runs = [
        {"method": "a", "per_class": 10, "seed": 0, "test_accuracy": 50.0},
        {"method": "a", "per_class": 10, "seed": 1, "test_accuracy": 60.0},
        {"method": "b", "per_class": 10, "seed": 0, "test_accuracy": 40.0},
    ]
    assert summarize(runs)["a"][10] == (55.0, 5.0, 2)
    table = markdown_table(runs, ["a", "b"])
    assert "| a | **55.00 ± 5.00** |" in table and "| b | 40.00 ± 0.00 |" in table


def test_command_line_end_to_end(tmp_path):
    import tensorflow_datasets as tfds

    out, cache = tmp_path / "out", tmp_path / "cache"
    argv = [
        "--dataset=mnist",
        "--teacher=cnn-4,6",
        "--student=cnn-2,3",
        "--methods=student,kd+vid-i",
        "--per-class=1",
        "--seeds=0",
        "--epochs=1",
        "--batch-size=32",
        f"--output-dir={out}",
        f"--cache-dir={cache}",
    ]
    with tfds.testing.mock_data(num_examples=100):
        payload = main(argv)
        assert sorted(os.listdir(out)) == ["accuracy.png", "results.json", "results.md"]
        with open(out / "results.json") as file:
            saved = json.load(file)
        assert [r["method"] for r in saved["runs"]] == ["student", "kd+vid-i"]
        assert all(r["train_images"] == 10 and r["steps"] == 1 for r in saved["runs"])
        assert saved["config"]["backend"] == keras.backend.backend()
        assert 0.0 <= saved["teacher"]["test_accuracy"] <= 100.0
        assert "| kd+vid-i |" in (out / "results.md").read_text()
        assert len(os.listdir(cache)) == 2  # the teacher and its metadata
        # A second call reuses the cached teacher and, with --resume, every run.
        again = main(argv + ["--resume"])
    assert again["runs"] == payload["runs"]


def test_recipe_options_reach_the_heads_and_compile(models):
    t_arch, s_arch, teacher, student = models
    config = MethodConfig(
        vid_weight=3.0,
        min_variance=1.0,
        use_batch_norm="all",
        hidden_multiplier=2.0,
        task_weight=0.1,
    )
    model, kwargs = build_method("vid-i", teacher, student, t_arch, s_arch, config)
    assert kwargs["task_weight"] == 0.1 and kwargs["vid_weight"] == 3.0
    for head, (_, t_layer) in zip(model.heads, model.pairs):
        channels = teacher.get_layer(t_layer).output.shape[-1]
        assert head.min_variance == 1.0 and head.use_batch_norm == "all"
        dense = [layer.units for layer in head.regressor if isinstance(layer, keras.layers.Dense)]
        assert dense == [2 * channels, 2 * channels, channels]
    # FitNet keeps σ² = 1 fixed (no floor on top) and the same μ.
    fitnet, fit_kwargs = build_method("fitnet", teacher, student, t_arch, s_arch, config)
    assert all(h.min_variance == 0.0 and not h.learn_variance for h in fitnet.heads)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(fitnet.heads[0].variance), 1.0)
    assert fit_kwargs["task_weight"] == 0.1


def test_validation_split_is_carved_out_and_scored(tmp_path):
    from keras_vid.experiments.runner import DataConfig, load_dataset

    rng = np.random.default_rng(0)
    for split, n in (("train", 60), ("test", 20)):
        np.savez(
            tmp_path / f"toy_{split}.npz",
            x=rng.integers(0, 255, size=(n, 8, 8, 1), dtype="uint8"),
            y=np.tile(np.arange(2), n // 2),
        )
    source = str(tmp_path / "toy_{split}.npz")
    config = DataConfig(source=source, validation_per_class=5, score_on="validation")
    data = load_dataset(config)
    validation = np.setdiff1d(np.arange(60), data.student_pool)
    assert len(validation) == 10 and np.bincount(data.train_labels[validation]).tolist() == [5, 5]
    np.testing.assert_array_equal(data.scored_labels, data.train_labels[validation])
    # Students draw only from the pool, and the same subset for the same seed.
    chosen = data.student_indices(per_class=3, seed=1)
    assert not set(chosen) & set(validation) and len(chosen) == 6
    np.testing.assert_array_equal(chosen, data.student_indices(per_class=3, seed=1))
    tested = load_dataset(DataConfig(source=source, validation_per_class=5))
    np.testing.assert_array_equal(tested.student_indices(3, 1), chosen)
    assert tested.scored_on == "test" and len(tested.scored_labels) == 20
    with pytest.raises(ValueError, match="validation_per_class"):
        load_dataset(DataConfig(source=source, score_on="validation"))


def test_command_line_validation_runs_and_a_saved_teacher(tmp_path):
    import tensorflow_datasets as tfds

    from keras_vid.experiments.compare import main as compare

    teacher = parse_architecture("cnn-4,6").build(10, (28, 28, 1), "teacher")
    teacher.save(tmp_path / "teacher.keras")
    out = tmp_path / "out"
    argv = [
        "--dataset=mnist",
        f"--teacher-model={tmp_path / 'teacher.keras'}",
        "--teacher=cnn-4,6",
        "--student=cnn-2,3",
        "--methods=student,vid-i",
        "--per-class=1",
        "--seeds=0",
        "--epochs=1",
        "--batch-size=32",
        "--validation-per-class=2",
        "--score-on=validation",
        "--min-variance=1",
        "--head-batch-norm=all",
        "--hidden-width=2x",
        "--task-weight=0.1",
        "--clipnorm=100",
        f"--output-dir={out}",
        f"--cache-dir={tmp_path / 'cache'}",
    ]
    with tfds.testing.mock_data(num_examples=100):
        payload = main(argv)
    assert not os.path.exists(tmp_path / "cache") or not os.listdir(tmp_path / "cache")
    assert all(
        r["scored_on"] == "validation" and "test_accuracy" not in r for r in payload["runs"]
    )
    assert payload["config"]["methods"]["min_variance"] == 1.0
    assert payload["config"]["methods"]["hidden_multiplier"] == 2.0
    assert payload["config"]["training"]["clipnorm"] == 100.0
    assert "Validation accuracy" in (out / "results.md").read_text()
    table = compare([f"floor 1={out}"])
    assert "| floor 1 | vid-i | 1 |" in table and "validation split" in table
    # Runs split across processes merge into one result set.
    merged = tmp_path / "merged"
    compare([f"{out},{out}", f"--merge-into={merged}"])
    with open(merged / "results.json") as file:
        assert len(json.load(file)["runs"]) == 2 * len(payload["runs"])
    assert "| vid-i |" in (merged / "results.md").read_text()


def test_help_shows_every_default(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert "--epochs EPOCHS" in text and "(default: 200)" in text
    assert "(default: wrn-16-1)" in text


def test_epoch_log_reports_progress_per_tenth_and_at_the_end():
    from keras_vid.experiments.runner import EpochLog

    lines = []
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer="sgd", loss="mse")
    x, y = np.ones((8, 3), "float32"), np.zeros((8, 2), "float32")
    model.fit(x, y, epochs=25, verbose=0, callbacks=[EpochLog("teacher cnn", 25, lines.append)])
    assert [line.split(",")[0] for line in lines] == [
        f"teacher cnn: epoch {e}/25" for e in (2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 25)
    ]
    assert all(" loss " in line and line.endswith(" s)") for line in lines)
