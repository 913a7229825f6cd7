"""CI smoke run of the accuracy suite (`benchmarks/accuracy.py --quick`), so it
cannot rot: two fast tasks, 4 steps per run, every method, on the current
backend. It checks the record the suite writes (one run per method, the VID
settings it used, the same on every task), not accuracies."""

import importlib.util
import json
import math
import os

import keras
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "..", "shared", "data", "fashion_mnist_train.npz")


def _benchmark(name):
    """`benchmarks/<name>.py` as a module (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location(
        name, os.path.join(ROOT, "benchmarks", f"{name}.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _suite():
    return _benchmark("accuracy")


def test_quick_suite_writes_every_method_with_one_set_of_vid_settings(tmp_path):
    """Every method, plain and combined with KD, in one run: each run compiles
    fresh models, which is most of a quick run's time."""
    if not os.path.exists(DATA):
        pytest.skip(f"{DATA} is not on this machine")
    suite = _suite()
    out, cache = str(tmp_path / "out"), str(tmp_path / "teachers")
    methods = ",".join(suite.METHODS + suite.COMBINED_METHODS)
    argv = ["--quick", "--tasks", "digits-10,fmnist-cnn-to-mlp-100", "--seeds", "0"]
    argv += ["--methods", methods, "--output", out, "--cache-dir", cache]
    suite.main(argv)
    with open(os.path.join(out, "results.json")) as f:
        results = json.load(f)
    assert [t["name"] for t in results["tasks"]] == ["digits-10", "fmnist-cnn-to-mlp-100"]
    settings = []
    digits, mlp = results["tasks"]
    # Attention transfer needs feature maps on both sides: the MLP student has none.
    every = set(suite.METHODS + suite.COMBINED_METHODS)
    assert sorted(r["method"] for r in digits["runs"]) == sorted(every)
    assert sorted(r["method"] for r in mlp["runs"]) == sorted(every - {"at", "kd+at"})
    assert "at_weight" not in mlp
    at = next(r for r in digits["runs"] if r["method"] == "at")
    assert digits["at_weight"] == at["at_settings"]["at_weight"] == suite.AT_WEIGHT
    assert list(digits["at_weight_validation"]) == [str(suite.AT_WEIGHT)]
    assert at["at_settings"]["pairs"] and "vid_settings" not in at
    for task in results["tasks"]:
        assert {"name", "dataset", "labelled_per_class", "teacher_test_accuracy"} <= set(task)
        for run in task["runs"]:
            assert 0.0 <= run["test_accuracy"] <= 100.0 and run["seed"] == 0
            if run["method"] in ("vid", "kd+vid"):
                settings.append(json.dumps(run["vid_settings"], sort_keys=True))
    assert len(set(settings)) == 1  # one set of VID settings on every task
    assert json.loads(settings[0])["pairs"] == "auto"
    # The same command again resumes: nothing is re-run.
    suite.main(argv)
    with open(os.path.join(out, "results.json")) as f:
        again = json.load(f)
    assert [len(t["runs"]) for t in again["tasks"]] == [8, 6]
    # KD with a feature method records that method's settings and KD's.
    runs = {r["method"]: r for r in digits["runs"]}
    assert runs["kd+at"]["at_settings"]["at_weight"] == digits["at_weight"]
    assert "vid_settings" in runs["kd+fitnet"] and "at_settings" not in runs["kd+fitnet"]
    assert runs["kd+fitnet"]["kd_temperature"] == digits["kd_temperature"]
    with open(os.path.join(out, "results.md")) as f:
        assert "| digits-10 | " in f.read().split("KD with each feature method")[1]


def test_unlabelled_methods_train_a_first_phase_without_labels(tmp_path):
    suite = _suite()
    out, cache = str(tmp_path / "out"), str(tmp_path / "teachers")
    argv = ["--quick", "--tasks", "digits-10", "--seeds", "0", "--methods", "kd-u,kd+vid-u"]
    suite.main(argv + ["--output", out, "--cache-dir", cache])
    with open(os.path.join(out, "results.json")) as f:
        runs = {r["method"]: r for r in json.load(f)["tasks"][0]["runs"]}
    assert sorted(runs) == ["kd+vid-u", "kd-u"]
    assert runs["kd-u"]["unlabelled_steps"] == runs["kd+vid-u"]["unlabelled_steps"] == 4
    assert "vid_settings" in runs["kd+vid-u"] and "vid_settings" not in runs["kd-u"]
    with open(os.path.join(out, "results.md")) as f:
        assert "| digits-10 | " in f.read().split("unlabelled images first")[1]
    with pytest.raises(SystemExit):
        suite.main(["--quick", "--methods", "kd,vidd", "--output", out, "--cache-dir", cache])


def test_kd_with_each_feature_method_adds_the_kd_term_to_that_method(tmp_path):
    """`kd+fitnet` and `kd+at` are FitNet's and AT's models with KD's weight
    and temperature added (their runs: the quick-suite test above)."""
    suite = _suite()
    data = suite.load(suite.TASKS["digits-10"], quick=True)
    teacher = suite.TASKS["digits-10"].teacher(data, str(tmp_path / "teachers"), True)
    settings = suite.vid_settings()
    for method, base in (("kd+fitnet", "fitnet"), ("kd+at", "at")):
        student = suite.TASKS["digits-10"].student(data)
        model, kwargs = suite.build(method, teacher, student, 4.0, settings, at_weight=100.0)
        _, base_kwargs = suite.build(base, teacher, student, 4.0, settings, at_weight=100.0)
        assert kwargs == {**base_kwargs, "kd_weight": 1.0, "temperature": 4.0}
        heads = model.heads
        if method == "kd+at":
            assert all(isinstance(h, suite.AttentionTransferHead) for h in heads)
            assert kwargs["vid_weight"] == 100.0
        else:
            assert all(not h.learn_variance and h.min_variance == 0.0 for h in heads)


def test_at_pairs_keep_the_map_pairs_also_inside_a_nested_model():
    """SST-2's pairs are paths into a KerasHub backbone ("backbone/layer");
    AT takes the pairs of maps, and token features are not maps."""
    suite = _suite()

    def model(name):
        inner_in = keras.Input((8, 8, 3))
        conv = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inner_in)
        tokens = keras.layers.Reshape((64, 4), name="tokens")(conv)
        backbone = keras.Model(inner_in, [conv, tokens], name="backbone")
        x = keras.Input((8, 8, 3))
        _, t = backbone(x)
        return keras.Model(x, keras.layers.Dense(2)(keras.layers.Flatten()(t)), name=name)

    teacher, student = model("teacher"), model("student")
    pairs = [("backbone/conv", "backbone/conv"), ("backbone/tokens", "backbone/tokens")]
    assert suite.at_pairs(teacher, student, {"pairs": pairs}) == [pairs[0]]


def test_the_kd_temperature_search_resumes_from_the_scores_it_kept(tmp_path, monkeypatch):
    """A search stopped after some temperatures re-runs only the others."""
    suite = _suite()
    out, cache = tmp_path / "out", str(tmp_path / "teachers")
    out.mkdir()
    entry = {"name": "digits-10", "dataset": "digits", "labelled_per_class": 10,
             "teacher_test_accuracy": 90.0, "runs": [],
             "kd_temperature_validation": {"4.0": 70.0}}  # fmt: skip
    (out / "results.json").write_text(json.dumps({"tasks": [entry]}))
    calls = []

    def train_run(task, data, teacher, method, seed, temperature, settings, split, steps, *a):
        calls.append((method, temperature, split))
        accuracy = {2.0: 80.0, 8.0: 60.0}.get(temperature, 75.0)
        return {"accuracy": accuracy, "correct": np.ones(3, bool), "train_time_s": 0.0}

    monkeypatch.setattr(suite, "train_run", train_run)
    monkeypatch.setattr(suite, "TEMPERATURES", (2.0, 4.0, 8.0))
    argv = ["--tasks", "digits-10", "--seeds", "0", "--methods", "kd", "--output", str(out)]
    monkeypatch.setattr(suite.TASKS["digits-10"], "teacher", lambda d, c, q: None)
    suite.main(argv + ["--cache-dir", cache])
    assert calls == [("kd", 2.0, "validation"), ("kd", 8.0, "validation"), ("kd", 2.0, "test")]
    (task,) = json.loads((out / "results.json").read_text())["tasks"]
    assert task["kd_temperature"] == 2.0
    assert task["kd_temperature_validation"] == {"4.0": 70.0, "2.0": 80.0, "8.0": 60.0}


def test_the_kd_temperature_search_doubles_past_an_edge_while_it_improves():
    suite = _suite()
    scores = {1.0: 50.0, 2.0: 51.0, 4.0: 52.0, 8.0: 53.0, 16.0: 54.0, 32.0: 54.0, 64.0: 99.0}
    asked = []

    def score(t):
        asked.append(t)
        return scores[t]

    assert suite.choose_temperature(score) == 16.0  # 32 only ties: the lower is kept
    assert max(asked) == 32.0
    assert suite.choose_temperature(lambda t: -abs(t - 2.0)) == 2.0  # an inner best: no doubling
    assert suite.choose_temperature(score, high=8.0) == 8.0


def test_a_new_kd_temperature_supersedes_the_kd_runs_of_the_old_one(tmp_path, monkeypatch):
    """A task whose recorded temperature was the grid's edge gets the doubled
    temperature scored; when it wins, the KD runs move to `superseded_runs`
    and are run again with it, and the other methods' runs stay."""
    suite = _suite()
    out, cache = tmp_path / "out", str(tmp_path / "teachers")
    out.mkdir()
    old_runs = [{"method": "kd", "seed": 0, "test_accuracy": 60.0},
                {"method": "kd+vid", "seed": 0, "test_accuracy": 61.0},
                {"method": "student", "seed": 0, "test_accuracy": 50.0}]  # fmt: skip
    entry = {"name": "digits-10", "dataset": "digits", "labelled_per_class": 10,
             "teacher_test_accuracy": 90.0, "runs": old_runs, "kd_temperature": 8.0,
             "kd_temperature_validation": {str(t): t for t in (1.0, 2.0, 4.0, 8.0)}}  # fmt: skip
    (out / "results.json").write_text(json.dumps({"tasks": [entry]}))
    calls = []

    def train_run(task, data, teacher, method, seed, temperature, settings, split, steps, *a):
        calls.append((method, temperature, split))
        accuracy = {16.0: 16.0, 32.0: 10.0}[temperature] if split == "validation" else 70.0
        return {"accuracy": accuracy, "correct": np.ones(3, bool), "train_time_s": 0.0}

    monkeypatch.setattr(suite, "train_run", train_run)
    monkeypatch.setattr(suite.TASKS["digits-10"], "teacher", lambda d, c, q: None)
    argv = [
        "--tasks",
        "digits-10",
        "--seeds",
        "0",
        "--methods",
        "student,kd",
        "--output",
        str(out),
    ]
    suite.main(argv + ["--cache-dir", cache])
    assert calls == [("kd", 16.0, "validation"), ("kd", 32.0, "validation"), ("kd", 16.0, "test")]
    (task,) = json.loads((out / "results.json").read_text())["tasks"]
    assert task["kd_temperature"] == 16.0
    assert [(r["method"], r["kd_temperature"]) for r in task["superseded_runs"]] == [
        ("kd", 8.0),
        ("kd+vid", 8.0),
    ]
    runs = {r["method"]: r for r in task["runs"]}
    assert runs["student"]["test_accuracy"] == 50.0  # not a KD run: kept, not re-run
    assert runs["kd"]["kd_temperature"] == 16.0 and runs["kd"]["test_accuracy"] == 70.0
    calls.clear()
    suite.main(argv + ["--cache-dir", cache])  # resumed: nothing left to run
    assert calls == []


def test_a_save_keeps_the_tasks_another_process_wrote_meanwhile(tmp_path):
    """Two suite processes on different tasks may share one results.json."""
    suite = _suite()
    out, cache = str(tmp_path / "out"), str(tmp_path / "teachers")
    path = os.path.join(out, "results.json")
    other = {"name": "other-task", "teacher_test_accuracy": 50.0, "runs": []}
    train_run = suite.train_run

    def run_while_another_process_saves(*args, **kwargs):
        results = {"tasks": []}  # the other process may also be the first to save
        if os.path.exists(path):
            with open(path) as f:
                results = json.load(f)
        if all(t["name"] != "other-task" for t in results["tasks"]):
            results["tasks"].append(other)
            with open(path, "w") as f:
                json.dump(results, f)
        return train_run(*args, **kwargs)

    suite.train_run = run_while_another_process_saves
    argv = ["--quick", "--tasks", "digits-10", "--seeds", "0", "--methods", "student"]
    suite.main(argv + ["--output", out, "--cache-dir", cache])
    with open(path) as f:
        tasks = {t["name"]: t for t in json.load(f)["tasks"]}
    assert sorted(tasks) == ["digits-10", "other-task"]
    assert [r["method"] for r in tasks["digits-10"]["runs"]] == ["student"]


def test_an_augmented_teacher_resumes_after_its_last_completed_epoch(tmp_path, monkeypatch):
    """A stopped teacher run continues with no epoch lost or repeated: the
    second call trains only the epochs left, from the checkpointed weights
    and optimizer step, and leaves the cached teacher, not the checkpoint."""
    import keras
    import numpy as np

    suite = _suite()
    rng = np.random.default_rng(0)
    x, y = rng.random((64, 4, 4, 1)).astype("float32"), rng.integers(0, 3, 64)
    data = suite.Data(x, y, x[:8], y[:8], x[:8], y[:8], 3)

    def build():
        inputs = keras.Input((4, 4, 1))
        outputs = keras.layers.Dense(3)(keras.layers.Flatten()(inputs))
        return keras.Model(inputs, outputs)

    epochs_seen = []

    def augment_then_stop_in_epoch(stop):
        def augment(images, epoch_rng):
            epochs_seen.append(len(epochs_seen))
            if len(epochs_seen) == stop:
                raise KeyboardInterrupt
            return images + 0.01 * epoch_rng.standard_normal(images.shape).astype("float32")

        return augment

    cache = str(tmp_path)
    args = ("tiny", build, data, cache, 3, 16, 1e-2, False)
    with pytest.raises(KeyboardInterrupt):
        suite.trained_teacher(*args, augment=augment_then_stop_in_epoch(stop=2))
    checkpoint = os.path.join(cache, "tiny.keras.ckpt.keras")
    after_one = keras.saving.load_model(checkpoint)
    assert int(after_one.optimizer.iterations) == 4  # one epoch of 64 / 16
    epochs_seen.clear()
    steps_at_save, save = [], keras.Model.save

    def recording_save(model, path, *a, **k):
        if path == checkpoint:
            steps_at_save.append(int(model.optimizer.iterations))
        return save(model, path, *a, **k)

    monkeypatch.setattr(keras.Model, "save", recording_save)
    teacher = suite.trained_teacher(*args, augment=augment_then_stop_in_epoch(stop=0))
    assert len(epochs_seen) == 2  # epochs 2 and 3 only
    assert steps_at_save == [8, 12]  # the optimizer continued from step 4
    assert sorted(os.listdir(cache)) == ["tiny.keras"]
    assert not np.allclose(teacher.get_weights()[0], after_one.get_weights()[0])
    cached = keras.saving.load_model(os.path.join(cache, "tiny.keras"))
    np.testing.assert_allclose(cached.get_weights()[0], teacher.get_weights()[0])


def test_batch_norm_recalibration_sets_the_moving_statistics_of_the_final_weights():
    """Moving statistics left at their initial (0, 1), as momentum 0.999 can
    leave them, end at the features' mean and variance (3, 4), and the
    layer's momentum is restored."""
    import keras
    import numpy as np

    suite = _suite()
    rng = np.random.default_rng(0)
    x = (3.0 + 2.0 * rng.standard_normal((6400, 4, 4, 2))).astype("float32")
    inputs = keras.Input((4, 4, 2))
    norm = keras.layers.BatchNormalization(momentum=0.999)
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(norm(inputs))))
    suite.recalibrate_batch_norm(model, x, batch_size=64, batches=100)
    assert norm.momentum == 0.999
    np.testing.assert_allclose(np.asarray(norm.moving_mean), x.mean(axis=(0, 1, 2)), atol=0.1)
    np.testing.assert_allclose(np.asarray(norm.moving_variance), x.var(axis=(0, 1, 2)), atol=0.3)


def test_attention_transfer_pairs_the_feature_maps_with_the_tasks_beta():
    suite = _suite()
    teacher = suite.cnn((8, 16), (8, 8, 1), 10, "teacher")
    student = suite.cnn((4, 8), (8, 8, 1), 10, "student")
    settings = suite.vid_settings()
    pairs = suite.at_pairs(teacher, student, settings)
    assert pairs and all(
        len(student.get_layer(s).output.shape) == len(teacher.get_layer(t).output.shape) == 4
        for s, t in pairs
    )
    model, kwargs = suite.build("at", teacher, student, 4.0, settings, at_weight=250.0)
    assert kwargs == {"vid_weight": 250.0, "task_weight": 1.0}  # no KD term
    assert [type(h).__name__ for h in model.heads] == ["AttentionTransferHead"] * len(pairs)
    assert model.pairs == pairs
    mlp = suite.mlp((16,), (8, 8, 1), 10, "mlp")
    assert suite.at_pairs(teacher, mlp, settings) == []


@pytest.mark.parametrize(
    "peak, expected, calls",
    [
        (1000.0, 1000.0, [1000.0, 100.0, 10000.0]),  # the start is best: 3 runs
        (10.0, 10.0, [1000.0, 100.0, 10000.0, 10.0, 1.0]),  # down while it improves
        (1e9, 1e5, [1000.0, 100.0, 10000.0, 1e5]),  # never past the bound
    ],
)
def test_the_beta_search_moves_in_decades_while_validation_improves(peak, expected, calls):
    suite = _suite()
    seen = []

    def score(beta):  # peaked at `peak` on a log scale, like accuracy against β
        seen.append(beta)
        return -abs(np.log10(beta) - np.log10(peak))

    assert suite.decade_search(score, 1000.0) == expected
    assert list(dict.fromkeys(seen)) == calls


def _paired():
    return _benchmark("paired")


def test_mcnemar_is_the_exact_two_sided_binomial_test_of_the_discordant_images():
    paired = _paired()
    a = np.array([1, 1, 1, 0, 0, 1, 0, 1], bool)
    b = np.array([1, 0, 0, 1, 0, 1, 0, 0], bool)
    # 3 images only a gets right, 1 only b: 2 · P(X ≤ 1), X ~ Binomial(4, ½) = 2 · 5/16.
    assert paired.mcnemar(a, b) == (3, 1, 0.625)
    assert paired.mcnemar(a, a) == (0, 0, 1.0)
    assert paired.mcnemar(np.ones(10, bool), np.zeros(10, bool))[2] == 2.0 / 2**10


def test_mcnemar_holds_on_thousands_of_discordant_images():
    """A 10 000-image test split can have over 1 023 discordant images,
    where 2.0 ** n overflows a float; the p-value matches a log-space sum."""
    paired = _paired()
    only_a, only_b = 1050, 950
    a = np.r_[np.ones(only_a, bool), np.zeros(only_b, bool)]
    only, other, p = paired.mcnemar(a, ~a)
    n = only_a + only_b
    logs = [math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) for k in range(951)]
    top = max(logs)
    expected = 2.0 * math.exp(
        top + math.log(sum(math.exp(v - top) for v in logs)) - n * math.log(2)
    )
    assert (only, other) == (1050, 950)
    assert p == pytest.approx(expected, rel=1e-9)
    assert 0.02 < p < 0.03  # a 52.5 % split of 2 000 images
    all_a = np.ones(1200, bool)
    assert paired.mcnemar(all_a, ~all_a)[2] == 0.0  # 2 · 2**-1200 underflows to 0


def test_a_paired_rerun_reproduces_the_accuracies_the_suite_recorded(tmp_path):
    suite, paired = _suite(), _paired()
    out, cache = str(tmp_path / "out"), str(tmp_path / "teachers")
    argv = ["--quick", "--tasks", "digits-10", "--seeds", "0", "--methods", "student,vid"]
    suite.main(argv + ["--output", out, "--cache-dir", cache])
    with open(os.path.join(out, "results.json")) as f:
        (entry,) = json.load(f)["tasks"]
    recorded = {r["method"]: r["test_accuracy"] for r in entry["runs"]}
    assert "kd_temperature" not in entry  # searched only when a KD method runs
    (row,) = paired.main(
        ["--task", "digits-10", "--seeds", "0", "--quick", "--results", out, "--cache-dir", cache]
    )
    runs = row["runs"]
    assert {m: runs[m]["accuracy"] for m in runs} == recorded  # the same students, retrained
    only_student, only_vid, p = paired.mcnemar(runs["student"]["correct"], runs["vid"]["correct"])
    assert row["only"] == (only_student, only_vid) and row["p"] == p


def test_wrn_student_tasks_take_raw_pixels_and_pair_each_group():
    """The WRN-16-1 tasks: the paper's student on raw pixels, its three group
    outputs paired with the CNN teacher's stages of the same resolution."""
    from keras_vid import suggest_pairs

    suite = _suite()
    task = suite.TASKS["cifar10-wrn-cnn80-100"]
    student = task.student(None)
    assert student.count_params() == 175_994  # WRN-16-1, 10 classes, BN statistics included
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    normalised = keras.ops.convert_to_numpy(student.get_layer("normalize")(pixels))
    expected = (pixels - np.array(suite.CIFAR_MEAN)) / np.array(suite.CIFAR_STD)
    np.testing.assert_allclose(normalised, expected, rtol=1e-4, atol=1e-4)
    teacher = suite.cnn((32, 64, 128, 256), (32, 32, 3), 10, "teacher")
    pairs = suggest_pairs(teacher, student)
    assert pairs == [("group1", "block1"), ("group2", "block2"), ("group3", "block3")]


@pytest.mark.parametrize(
    "overrides, expected",
    [
        ({"vid_weight_warmup": 0.5}, ("linear", 0.0, 3.0, 0.5)),
        ({"vid_weight_decay": "cosine"}, ("cosine", 3.0, 0.0, 1.0)),
    ],
)
def test_lambda_schedules_of_the_suite(tmp_path, overrides, expected):
    """`--vid` λ schedules: a warm-up ramps λ from 0 over its fraction of the
    epochs, a decay takes it to 0 over all of them; both at once is refused."""
    suite = _suite()
    out, cache = str(tmp_path / "out"), str(tmp_path / "cache")
    seen = []

    class Recording(suite.WeightSchedule):
        def __init__(self, vid_weight=None, **kwargs):
            seen.append(vid_weight)
            super().__init__(vid_weight=vid_weight, **kwargs)

    suite.WeightSchedule = Recording
    argv = ["--quick", "--tasks", "digits-10", "--seeds", "0", "--methods", "student,vid"]
    suite.main(argv + ["--output", out, "--cache-dir", cache, "--vid", json.dumps(overrides)])
    kind, start, end, fraction = expected
    (schedule,) = seen  # the student run has none
    epochs = math.ceil(4 / math.ceil(100 / 32))  # --quick: 4 steps, 100 images, batch 32
    assert (schedule.kind, schedule.start, schedule.end) == (kind, start, end)
    assert schedule.epochs == max(1, round(fraction * epochs))
    with open(os.path.join(out, "results.json")) as f:
        (task,) = json.load(f)["tasks"]
    vid_run = next(r for r in task["runs"] if r["method"] == "vid")
    assert vid_run["vid_settings"][next(iter(overrides))] == next(iter(overrides.values()))
    both = {"vid_weight_warmup": 0.5, "vid_weight_decay": "cosine"}
    with pytest.raises(ValueError, match="Choose one λ schedule"):
        suite.main(
            ["--quick", "--tasks", "digits-10", "--seeds", "1", "--methods", "vid"]
            + ["--output", out, "--cache-dir", cache, "--vid", json.dumps(both)]
        )
