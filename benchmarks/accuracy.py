"""Accuracy suite: does VID, with the library's defaults, help on every task?

    python benchmarks/accuracy.py                      # every task, test split
    python benchmarks/accuracy.py --tasks digits-10,fmnist-10 --seeds 0,1,2
    python benchmarks/accuracy.py --quick              # a few steps per task (CI)
    python benchmarks/accuracy.py --split validation --output runs/acc-val \\
        --vid '{"vid_weight": 3.0}'                    # a candidate default, on validation

Each task is a trained teacher, a student and a small labelled set; every
method trains the same student with the task's optimizer, schedule and data
(only the loss differs) and is scored once on the test split (or on a
validation split carved from the training data, which no student trains on):

- `student`: the task loss alone;
- `kd`: Hinton's KD, its temperature chosen per task on the validation split
  (seed 0, T in 1, 2, 4, 8), as a user would tune it;
- `vid`: VID with the library's defaults, pairs from `suggest_pairs`
  (`pairs="auto"`), no per-task setting;
- `kd+vid`: both, KD with the task's `kd` temperature;
- `fitnet`: the same pairs with a fixed unit variance (MSE), default weight;
- `at`: attention transfer (Zagoruyko & Komodakis) on the same pairs where
  they are feature maps, β chosen per task on the validation split (seed 0:
  the paper's 1 000, ÷ 10 and × 10, then on in decades while the better
  side improves), as a user would tune it; skipped on tasks without
  feature-map pairs (tokens, an MLP student);
- `kd-u`, `vid-u`, `kd+vid-u` (not in the default list): the same, after a
  first phase of `steps` batches of the pool's images without their labels
  (the distillation terms only), what a user who has the teacher's images
  can add; KD and VID see the same unlabelled images.

Every run is appended to `<output>/results.json` as soon as it ends, and a
run already there is skipped: the same command continues an interrupted
suite. `<output>/results.md` and `accuracy.png` are rewritten after each run.
Teachers are trained once and cached under `--cache-dir` (the CIFAR-10
teachers are read from `results/teachers.json`).
"""

import argparse
import dataclasses
import json
import math
import os
import sys
import time
import warnings

import keras
import numpy as np
from keras.layers import BatchNormalization

from keras_vid import AttentionTransferHead, EpochSchedule, VIDDistiller, WeightSchedule
from keras_vid.compat import sublayers
from keras_vid.experiments.models import wide_resnet

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "..", "shared", "data")
METHODS = ("student", "kd", "fitnet", "at", "vid", "kd+vid")
UNLABELLED_METHODS = ("kd-u", "vid-u", "kd+vid-u")
# KD with another feature method (its default or the task's β, KD's temperature):
# whether features add to KD on a task at all, whichever method transfers them.
COMBINED_METHODS = ("kd+fitnet", "kd+at")
TEMPERATURES = (1.0, 2.0, 4.0, 8.0)  # KD's grid; doubled on while its top edge wins
MAX_TEMPERATURE = 64.0
AT_WEIGHT = 1000.0  # the paper's β, where the search on validation starts
CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


@dataclasses.dataclass
class Data:
    """A task's splits: `pool` (what students draw their labelled set from),
    `validation` (carved from the training data, never trained on by a
    student) and `test`."""

    x_pool: object
    y_pool: np.ndarray
    x_val: object
    y_val: np.ndarray
    x_test: object
    y_test: np.ndarray
    num_classes: int


@dataclasses.dataclass
class Task:
    name: str
    dataset: str
    labelled_per_class: int
    load: object  # () -> Data
    teacher: object  # (data, cache_dir, quick) -> keras.Model
    student: object  # (data) -> keras.Model
    steps: int
    batch_size: int
    optimizer: object  # (total_steps) -> optimizer
    augment: object = None  # (x, rng) -> x, applied per epoch to the labelled images
    schedule: str = ""


# ----------------------------------------------------------------------------- data


def _stratified(labels, per_class, rng):
    return np.concatenate(
        [
            rng.choice(np.flatnonzero(labels == c), per_class, replace=False)
            for c in np.unique(labels)
        ]
    )


def _split(x, y, x_test, y_test, val_per_class, seed=2019):
    """Carve a stratified validation split (fixed seed) out of the training data."""
    val = _stratified(y, val_per_class, np.random.default_rng(seed))
    pool = np.setdiff1d(np.arange(len(y)), val)
    return Data(x[pool], y[pool], x[val], y[val], x_test, y_test, int(y.max()) + 1)


def _npz(name):
    with np.load(os.path.join(DATA, name)) as f:
        return f["x"], f["y"].astype("int64")


def load_fashion_mnist():
    x, y = _npz("fashion_mnist_train.npz")
    xt, yt = _npz("fashion_mnist_test.npz")
    scale = lambda a: (a.astype("float32") / 255.0)[..., None]  # noqa: E731
    return _split(scale(x), y, scale(xt), yt, val_per_class=500)


def load_digits():
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    digits = sklearn_digits()
    x = (digits.images / 16.0).astype("float32")[..., None]
    x_train, x_test, y_train, y_test = train_test_split(
        x, digits.target, test_size=0.33, stratify=digits.target, random_state=0
    )
    return _split(x_train, y_train.astype("int64"), x_test, y_test.astype("int64"), 30)


def load_cifar10():
    x, y = _npz("cifar10_train.npz")
    xt, yt = _npz("cifar10_test.npz")
    return _split(x.astype("float32"), y, xt.astype("float32"), yt, val_per_class=500)


def load(task, quick=False):
    """`task`'s data; a quick (smoke) run evaluates on 200 images per split."""
    data = task.load()
    if quick:
        data.x_test, data.y_test = _take(data.x_test, np.arange(200)), data.y_test[:200]
        data.x_val, data.y_val = _take(data.x_val, np.arange(200)), data.y_val[:200]
    return data


def _take(x, index):
    """Rows `index` of an array or of a dict of arrays (token inputs)."""
    if isinstance(x, dict):
        return {k: v[index] for k, v in x.items()}
    return x[index]


def _transformer_example():
    """`examples/distil_transformer.py` as a module (its SST-2 reader, BERT
    builder and AdamW schedule)."""
    import importlib.util

    path = os.path.join(ROOT, "examples", "distil_transformer.py")
    spec = importlib.util.spec_from_file_location("distil_transformer", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SST2_LENGTH = 64


def load_sst2():
    """SST-2 phrases (train) as the pool, the dev sentences as validation, the
    labelled test sentences as test; a word vocabulary from the training split."""
    example = _transformer_example()
    text, y = example.load_tsv(os.path.join(DATA, "sst2_train.tsv"))
    dev_text, dev_y = example.load_tsv(os.path.join(DATA, "sst2_dev.tsv"))
    test_text, test_y = example.load_tsv(os.path.join(DATA, "sst2_test.tsv"))
    vocabulary = example.build_vocabulary(text)
    encode = lambda t: example.encode(t, vocabulary, SST2_LENGTH)  # noqa: E731
    data = Data(encode(text), y.astype("int64"), encode(dev_text), dev_y.astype("int64"),
                encode(test_text), test_y.astype("int64"), 2)  # fmt: skip
    data.vocabulary_size = len(vocabulary)
    return data


def _sst2_teacher(data, cache_dir, quick):
    example = _transformer_example()
    path = os.path.join(cache_dir, f"sst2-bert-4x128{'-quick' if quick else ''}.keras")
    if os.path.exists(path):
        import keras_hub  # noqa: F401  (registers the classes)

        return keras.saving.load_model(path, compile=False)
    keras.utils.set_random_seed(0)
    size = (2, 16, 2, 32) if quick else (4, 128, 4, 256)
    teacher = example.bert_classifier("teacher", data.vocabulary_size, *size, SST2_LENGTH)
    x, y = data.x_pool, data.y_pool
    if quick:
        x, y = _take(x, np.arange(256)), y[:256]
    example.train_teacher(teacher, x, y, epochs=1, batch_size=64, verbose=0)
    os.makedirs(cache_dir, exist_ok=True)
    teacher.compile()
    teacher.save(path)
    return teacher


def _sst2_student(data):
    example = _transformer_example()
    return example.bert_classifier("student", data.vocabulary_size, 2, 64, 2, 128, SST2_LENGTH)


def _sst2_optimizer(total_steps):
    return _transformer_example().adamw(1e-3, total_steps)


def flip_crop(x, rng, pad=4):
    """Random horizontal flips and pad-`pad` random crops (reflection padding)."""
    flipped = np.where(rng.random(len(x))[:, None, None, None] < 0.5, x[:, :, ::-1], x)
    padded = np.pad(flipped, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")
    shifts = rng.integers(0, 2 * pad + 1, size=(len(x), 2))
    h, w = x.shape[1:3]
    return np.stack([padded[i, a : a + h, b : b + w] for i, (a, b) in enumerate(shifts)])


# ----------------------------------------------------------------------------- models


def cnn(widths, input_shape, num_classes, name, normalize=None):
    """conv3×3-BN-ReLU per stage with max-pooling between stages (names
    `block<k>`, `pool`, `logits`); `normalize=(mean, std)` puts the input
    normalisation inside the model."""
    inputs = keras.Input(input_shape)
    x = inputs
    if normalize is not None:
        mean, std = normalize
        x = keras.layers.Normalization(mean=mean, variance=[s * s for s in std])(x)
    for k, width in enumerate(widths, start=1):
        x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False)(x)
        x = keras.layers.BatchNormalization(momentum=0.9, name=f"block{k}_bn")(x)
        x = keras.layers.ReLU(name=f"block{k}")(x)
        if k < len(widths):
            x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, keras.layers.Dense(num_classes, name="logits")(x), name=name)


def mlp(units, input_shape, num_classes, name):
    inputs = keras.Input(input_shape)
    x = keras.layers.Flatten()(inputs)
    for k, width in enumerate(units, start=1):
        x = keras.layers.Dense(width, activation="relu", name=f"hidden{k}")(x)
    return keras.Model(inputs, keras.layers.Dense(num_classes, name="logits")(x), name=name)


def trained_teacher(
    name, build, data, cache_dir, epochs, batch_size, learning_rate, quick, augment=None
):
    """Train `build()` on the pool (Adam, cosine decay) once; cached as .keras.

    With `augment`, a fresh augmentation of the pool each epoch and a
    checkpoint (model and optimizer) after each one: an interrupted teacher
    continues from its last completed epoch when the suite runs again."""
    path = os.path.join(cache_dir, f"{name}{'-quick' if quick else ''}.keras")
    if os.path.exists(path):
        return keras.saving.load_model(path, compile=False)
    keras.utils.set_random_seed(0)
    teacher = build()
    x, y = data.x_pool, data.y_pool
    if quick:
        keep = np.random.default_rng(0).permutation(len(y))[:2000]
        x, y, epochs = _take(x, keep), y[keep], 1
    steps = epochs * math.ceil(len(y) / batch_size)
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, steps)
    teacher.compile(optimizer=keras.optimizers.Adam(schedule), loss=CE)
    os.makedirs(cache_dir, exist_ok=True)
    if augment is None:
        teacher.fit(x, y, batch_size=batch_size, epochs=epochs, verbose=0)
    else:
        teacher = _fit_resumably(teacher, x, y, augment, epochs, batch_size, path)
        recalibrate_batch_norm(teacher, x, batch_size)
    teacher.compile()
    teacher.save(path)
    return teacher


def _fit_resumably(teacher, x, y, augment, epochs, batch_size, path):
    """Epoch by epoch, checkpointed to `<path>.ckpt.keras` + `.progress.json`."""
    checkpoint, progress = path + ".ckpt.keras", path + ".progress.json"
    done = 0
    if os.path.exists(checkpoint) and os.path.exists(progress):
        teacher = keras.saving.load_model(checkpoint)
        with open(progress) as f:
            done = json.load(f)["epochs_done"]
        print(f"{os.path.basename(path)}: resuming after epoch {done}/{epochs}", flush=True)
    for epoch in range(done, epochs):
        start = time.time()
        rng = np.random.default_rng(epoch)  # the same augmentation when resumed
        history = teacher.fit(
            augment(x, rng), y, batch_size=batch_size, epochs=epoch + 1,
            initial_epoch=epoch, verbose=0,
        )  # fmt: skip
        teacher.save(checkpoint)
        with open(progress + ".tmp", "w") as f:
            json.dump({"epochs_done": epoch + 1}, f)
        os.replace(progress + ".tmp", progress)
        loss = history.history["loss"][-1]
        print(f"{os.path.basename(path)}: epoch {epoch + 1}/{epochs} loss {loss:.3f} "
              f"({time.time() - start:.0f} s)", flush=True)  # fmt: skip
    for leftover in (checkpoint, progress):
        os.remove(leftover)
    return teacher


def batch_norms(model):
    """Every BatchNormalization layer in `model`, nested ones included."""
    return [layer for layer in sublayers(model) if isinstance(layer, BatchNormalization)]


def recalibrate_batch_norm(model, x, batch_size, batches=100, seed=0):
    """Re-estimate every BatchNormalization's moving statistics with the final
    weights (momentum 0.9 over `batches` batches of `x`, then restored).

    keras.applications models use momentum 0.999, whose moving statistics
    can trail the weights: the suite's MobileNetV2 teacher scored 21.5 % on
    the validation split with them and 65.5 % after this (67.6 % on the
    batch statistics of 1 024 validation images)."""
    layers = batch_norms(model)
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.momentum = 0.9
    order = np.random.default_rng(seed).permutation(len(x))
    for k in range(min(batches, math.ceil(len(x) / batch_size))):
        model(_take(x, order[k * batch_size : (k + 1) * batch_size]), training=True)
    for layer, momentum in zip(layers, momenta):
        layer.momentum = momentum


def manifest_teacher(name):
    """A committed teacher from `results/teachers.json`."""
    with open(os.path.join(ROOT, "results", "teachers.json")) as f:
        entries = {e["name"]: e for e in json.load(f)}
    if name not in entries:
        raise SystemExit(f"teacher {name!r} is not in results/teachers.json (yet)")
    return keras.saving.load_model(os.path.join(ROOT, entries[name]["path"]), compile=False)


def adam(learning_rate):
    def make(total_steps):
        return keras.optimizers.Adam(
            keras.optimizers.schedules.CosineDecay(learning_rate, total_steps)
        )

    return make


def sgd_steps(learning_rate=0.1, weight_decay=5e-3):
    """The CIFAR recipe of results/cifar10/: Nesterov SGD 0.9, lr × 0.2 at
    30/60/80 % of the steps, decoupled weight decay."""

    def make(total_steps):
        bounds = [int(total_steps * f) for f in (0.3, 0.6, 0.8)]
        values = [learning_rate * 0.2**i for i in range(4)]
        schedule = keras.optimizers.schedules.PiecewiseConstantDecay(bounds, values)
        return keras.optimizers.SGD(
            schedule, momentum=0.9, nesterov=True, weight_decay=weight_decay
        )

    return make


CIFAR_MEAN, CIFAR_STD = (125.3, 123.0, 113.9), (63.0, 62.1, 66.7)


def _fmnist_teacher(data, cache_dir, quick):
    return trained_teacher(
        "fmnist-cnn-32-64-128",
        lambda: cnn((32, 64, 128), (28, 28, 1), 10, "teacher"),
        data, cache_dir, epochs=5, batch_size=128, learning_rate=2e-3, quick=quick,
    )  # fmt: skip


def _digits_teacher(data, cache_dir, quick):
    return trained_teacher(
        "digits-cnn-32-64-128",
        lambda: cnn((32, 64, 128), (8, 8, 1), 10, "teacher"),
        data, cache_dir, epochs=30, batch_size=64, learning_rate=3e-3, quick=quick,
    )  # fmt: skip


def _mobilenet_teacher(data, cache_dir, quick):
    def build():  # keras.applications expects [-1, 1] inputs: rescale inside the model
        inputs = keras.Input((32, 32, 3))
        scaled = keras.layers.Rescaling(1 / 127.5, offset=-1.0)(inputs)
        return keras.applications.MobileNetV2(
            input_tensor=scaled, weights=None, classes=10, classifier_activation=None
        )

    return trained_teacher(
        "cifar10-mobilenetv2", build, data, cache_dir, epochs=15, batch_size=128,
        learning_rate=2e-3, quick=quick, augment=flip_crop,
    )  # fmt: skip


def _mobilenet_student(data):
    student = keras.applications.MobileNetV3Small(
        input_shape=(32, 32, 3), alpha=0.5, minimalistic=True, weights=None, classes=10,
        classifier_activation=None,
    )  # fmt: skip
    for layer in batch_norms(student):  # 0.999 would leave the moving statistics
        layer.momentum = 0.9  # near their initial values after hundreds of steps
    return student


def _cifar_student(data):
    return cnn((8, 16, 32, 64), (32, 32, 3), 10, "student", normalize=(CIFAR_MEAN, CIFAR_STD))


def _wrn_student(data):
    """The paper's student, WRN-16-1 (0.18 M parameters), on raw pixels."""
    return wide_resnet(16, 1, 10, (32, 32, 3), normalize=(CIFAR_MEAN, CIFAR_STD), name="student")


def _cifar_task(name, teacher, student=_cifar_student):
    """CIFAR-10 at 100 images per class, the paper's 1 600-step schedule, the
    CNN 8-16-32-64 student (or `student`): one task per committed teacher of
    the manifest."""
    return Task(
        name, "CIFAR-10 (JPEG q75)", 100, load_cifar10,
        lambda d, c, q: manifest_teacher(teacher), student,
        steps=1600, batch_size=128, optimizer=sgd_steps(), augment=flip_crop,
        schedule="SGD Nesterov 0.1, ×0.2 at 30/60/80 %, batch 128, 1 600 steps, flip+crop",
    )  # fmt: skip


TASKS = {
    t.name: t
    for t in [
        Task(
            "digits-10", "sklearn digits 8×8", 10, load_digits, _digits_teacher,
            lambda d: cnn((8, 16, 32), (8, 8, 1), 10, "student"),
            steps=240, batch_size=32, optimizer=adam(3e-3),
            schedule="Adam 3e-3 cosine, batch 32, 240 steps",
        ),
        Task(
            "fmnist-10", "Fashion-MNIST", 10, load_fashion_mnist, _fmnist_teacher,
            lambda d: cnn((8, 16, 32), (28, 28, 1), 10, "student"),
            steps=400, batch_size=32, optimizer=adam(3e-3),
            schedule="Adam 3e-3 cosine, batch 32, 400 steps",
        ),
        Task(
            "fmnist-100", "Fashion-MNIST", 100, load_fashion_mnist, _fmnist_teacher,
            lambda d: cnn((8, 16, 32), (28, 28, 1), 10, "student"),
            steps=800, batch_size=64, optimizer=adam(3e-3),
            schedule="Adam 3e-3 cosine, batch 64, 800 steps",
        ),
        Task(
            "fmnist-100-teacher-size", "Fashion-MNIST", 100, load_fashion_mnist,
            _fmnist_teacher, lambda d: cnn((32, 64, 128), (28, 28, 1), 10, "student"),
            steps=800, batch_size=64, optimizer=adam(3e-3),
            schedule="Adam 3e-3 cosine, batch 64, 800 steps",
        ),
        Task(
            "fmnist-cnn-to-mlp-100", "Fashion-MNIST", 100, load_fashion_mnist, _fmnist_teacher,
            lambda d: mlp((256, 256), (28, 28, 1), 10, "student"),
            steps=800, batch_size=64, optimizer=adam(1e-3),
            schedule="Adam 1e-3 cosine, batch 64, 800 steps",
        ),
        Task(
            "sst2-1000", "SST-2 (1 000 labelled phrases)", 500, load_sst2, _sst2_teacher,
            _sst2_student, steps=320, batch_size=64, optimizer=_sst2_optimizer,
            schedule="AdamW 1e-3, 10 % warm-up + cosine, batch 64, 320 steps",
        ),
        _cifar_task("cifar10-cnn80-100", "cifar10-cnn-32-64-128-256"),
        _cifar_task("cifar10-airbench-100", "cifar10-airbench-64-256-256"),
        _cifar_task("cifar10-airbench-ls0-100", "cifar10-airbench-64-256-256-ls0"),
        _cifar_task("cifar10-wrn-cnn80-100", "cifar10-cnn-32-64-128-256", _wrn_student),
        _cifar_task(
            "cifar10-wrn-airbench-ls0-100", "cifar10-airbench-64-256-256-ls0", _wrn_student
        ),
        Task(
            "cifar10-mobilenet-100", "CIFAR-10 (JPEG q75)", 100, load_cifar10,
            _mobilenet_teacher, _mobilenet_student,
            steps=800, batch_size=128, optimizer=sgd_steps(), augment=flip_crop,
            schedule="SGD Nesterov 0.1, ×0.2 at 30/60/80 %, batch 128, 800 steps, flip+crop",
        ),
    ]
}  # fmt: skip


# ----------------------------------------------------------------------------- methods


def vid_settings(overrides=None):
    """Every VID setting a `vid`/`kd+vid` run uses: the library's defaults
    (read off a `VIDHead` and `VIDDistiller.compile`), plus any overrides."""
    import inspect

    from keras_vid import VIDHead

    head = VIDHead()
    config = head.get_config()
    head_keys = [k for k in inspect.signature(VIDHead.__init__).parameters if k in config]
    compile_defaults = inspect.signature(VIDDistiller.compile).parameters
    settings = {
        "pairs": "auto",
        "head_options": {k: config[k] for k in head_keys},
        "vid_weight": compile_defaults["vid_weight"].default,
        "task_weight": compile_defaults["task_weight"].default,
    }
    for key, value in (overrides or {}).items():
        if key in settings["head_options"]:
            settings["head_options"][key] = value
        else:
            settings[key] = value
    return settings


def decade_search(score, start, low=1.0, high=1e5):
    """The best value by `score` (higher is better) of a search in factors of 10:
    `start`, `start / 10` and `start * 10`, then on in the better direction
    while the score improves (within [`low`, `high`])."""
    best = max((start, start / 10, start * 10), key=score)  # ties keep `start`
    if best == start:
        return start
    up = best > start
    while True:
        after = best * 10 if up else best / 10
        if not low <= after <= high or score(after) <= score(best):
            return best
        best = after


def choose_temperature(score, grid=TEMPERATURES, high=MAX_TEMPERATURE):
    """KD's temperature by `score` (higher is better): the best of `grid`
    (ties keep the lower), then doubled on while the grid's top edge wins
    and doubling improves it (up to `high`), so the search never stops at
    an edge that is still improving."""
    best = max(grid, key=score)
    if best != max(grid):
        return best
    while best * 2 <= high and score(best * 2) > score(best):
        best *= 2
    return best


def cached_score(entry, key, save, log, label, train):
    """A validation scorer `value → accuracy` whose scores are kept in
    `entry[key]` (and saved) as they come, so an interrupted search resumes
    where it stopped; `train(value)` runs one validation run."""
    scores = entry.setdefault(key, {})

    def score(value):
        if str(value) not in scores:
            scores[str(value)] = train(value)["accuracy"]
            save()
            log(f"{label}={value:g} validation {scores[str(value)]:.2f}")
        return scores[str(value)]

    return score


def choose_kd_temperature(task, data, teacher, settings, steps, entry, quick, save, log):
    """KD's temperature for `task`, by `choose_temperature` on the validation
    split (seed 0), as a user would tune it; the scores are kept in
    `entry["kd_temperature_validation"]`. A quick run scores the lowest
    temperature."""
    validate = cached_score(
        entry,
        "kd_temperature_validation",
        save,
        log,
        f"{task.name}: kd T",
        lambda t: train_run(task, data, teacher, "kd", 0, t, settings, "validation", steps),
    )
    if quick:
        return choose_temperature(validate, TEMPERATURES[:1], high=TEMPERATURES[0])
    return choose_temperature(validate, TEMPERATURES)


def supersede_kd_runs(entry, temperature, log):
    """Set `entry`'s KD temperature; if it changed (a search extended past
    its old edge), the runs that used the old one move to
    `superseded_runs`, kept for the record, and are run again."""
    old = entry.get("kd_temperature")
    entry["kd_temperature"] = float(temperature)
    if old is None or float(old) == float(temperature):
        return
    stale = [r for r in entry["runs"] if r["method"].startswith("kd")]
    for run in stale:
        run.setdefault("kd_temperature", old)
    entry.setdefault("superseded_runs", []).extend(stale)
    entry["runs"] = [r for r in entry["runs"] if not r["method"].startswith("kd")]
    log(f"{entry['name']}: kd T {old:g} -> {temperature:g}, {len(stale)} KD runs superseded")


def choose_at_weight(task, data, teacher, settings, steps, entry, quick, save, log):
    """AT's β for `task`, by `decade_search` on the validation split (seed 0),
    as a user would tune it; the scores are kept in
    `entry["at_weight_validation"]`. A quick run scores the paper's β once."""
    validate = cached_score(
        entry,
        "at_weight_validation",
        save,
        log,
        f"{task.name}: at β",
        lambda beta: train_run(
            task, data, teacher, "at", 0, None, settings, "validation", steps, beta
        ),
    )
    if quick:
        validate(AT_WEIGHT)
        return AT_WEIGHT
    return decade_search(validate, AT_WEIGHT)


def at_pairs(teacher, student, settings):
    """The pairs of `settings` (resolved) whose both features are maps
    `(batch, h, w, c)`: what attention transfer can pair; `[]` if none."""
    from keras_vid.features import find_layer, layer_output
    from keras_vid.pair_suggestion import resolve_pairs

    def rank(model, name):  # a path ("backbone/layer") reaches into a nested model
        return len(layer_output(find_layer(model, name, "model"), model, "model").shape)

    pairs = resolve_pairs(teacher, student, settings["pairs"])
    return [(s, t) for s, t in pairs if rank(student, s) == rank(teacher, t) == 4]


def build(method, teacher, student, temperature, settings, at_weight=None):
    """The model to fit and its `compile` keywords."""
    if method == "student":
        return student, {}
    kd = {"kd_weight": 1.0, "temperature": temperature}
    if method == "kd":
        return VIDDistiller(teacher, student, pairs=[]), kd
    if method in ("at", "kd+at"):
        pairs = at_pairs(teacher, student, settings)
        heads = [AttentionTransferHead(name=f"at_head_{i}") for i in range(len(pairs))]
        model = VIDDistiller(teacher, student, pairs=pairs, heads=heads)
        at = {"vid_weight": at_weight, "task_weight": 1.0}
        return model, {**at, **(kd if method == "kd+at" else {})}
    changed = {
        k: v for k, v in settings["head_options"].items() if v != vid_settings()["head_options"][k]
    }
    weights = {"vid_weight": settings["vid_weight"], "task_weight": settings["task_weight"]}
    if method in ("fitnet", "kd+fitnet"):
        changed.update(learn_variance=False, init_variance=1.0, min_variance=0.0)
    model = VIDDistiller(teacher, student, pairs=settings["pairs"], head_options=changed or None)
    return model, {**weights, **(kd if method in ("kd+vid", "kd+fitnet") else {})}


def correct(model, x, y):
    """Whether `model` classifies each example of `x` right (a bool array)."""
    logits = model.predict(x, batch_size=500, verbose=0)
    return np.argmax(logits, axis=-1) == y


def accuracy(model, x, y):
    return float(100.0 * np.mean(correct(model, x, y)))


def _unlabelled_phase(task, data, model, kwargs, rng, steps):
    """`steps` batches of pool images without labels (the distillation terms
    only), with the task's optimizer schedule over those steps."""
    n = steps * task.batch_size
    rounds = math.ceil(n / len(data.y_pool))
    order = np.concatenate([rng.permutation(len(data.y_pool)) for _ in range(rounds)])[:n]
    x = _take(data.x_pool, order)
    if task.augment is not None:
        x = task.augment(x, rng)
    model.compile(optimizer=task.optimizer(steps), loss=CE, **kwargs)
    with warnings.catch_warnings():  # the student's last layer gets no VID gradient
        warnings.filterwarnings("ignore", message="Gradients do not exist")
        model.fit(x, batch_size=task.batch_size, epochs=1, verbose=0)


def train_run(
    task, data, teacher, method, seed, temperature, settings, split, steps, at_weight=None
):
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    index = _stratified(data.y_pool, task.labelled_per_class, rng)
    x, y = _take(data.x_pool, index), data.y_pool[index]
    keras.utils.set_random_seed(1000 + seed)
    student = task.student(data)
    base_method = method.removesuffix("-u")
    model, kwargs = build(base_method, teacher, student, temperature, settings, at_weight)
    start = time.time()
    unlabelled_steps = steps if method.endswith("-u") else 0
    if unlabelled_steps:
        _unlabelled_phase(task, data, model, kwargs, rng, unlabelled_steps)
    model.compile(optimizer=task.optimizer(steps), loss=CE, metrics=["accuracy"], **kwargs)
    steps_per_epoch = math.ceil(len(y) / task.batch_size)
    epochs = math.ceil(steps / steps_per_epoch)
    callbacks = []
    if settings.get("vid_weight_decay") and base_method in ("vid", "kd+vid"):
        decay = EpochSchedule(
            settings["vid_weight_decay"], start=settings["vid_weight"], end=0.0, epochs=epochs
        )
        callbacks.append(WeightSchedule(vid_weight=decay))
    if settings.get("vid_weight_warmup") and settings.get("vid_weight_decay"):
        raise ValueError(
            "Choose one λ schedule: vid_weight_warmup or vid_weight_decay. Received: "
            f"vid_weight_warmup={settings['vid_weight_warmup']!r}, "
            f"vid_weight_decay={settings['vid_weight_decay']!r}"
        )
    if settings.get("vid_weight_warmup") and base_method in ("vid", "kd+vid"):
        ramp = max(1, round(settings["vid_weight_warmup"] * epochs))
        warmup = EpochSchedule("linear", start=0.0, end=settings["vid_weight"], epochs=ramp)
        callbacks.append(WeightSchedule(vid_weight=warmup))
    if task.augment is None:
        history = model.fit(
            x, y, batch_size=task.batch_size, epochs=epochs, verbose=0, callbacks=callbacks
        )
        losses = history.history["loss"]
    else:
        losses = []
        for epoch in range(epochs):  # a fresh augmentation of the labelled images each epoch
            h = model.fit(
                task.augment(x, rng), y, batch_size=task.batch_size, epochs=epoch + 1,
                initial_epoch=epoch, verbose=0, callbacks=callbacks,
            )  # fmt: skip
            losses += h.history["loss"]
    x_eval, y_eval = (
        (data.x_val, data.y_val) if split == "validation" else (data.x_test, data.y_test)
    )
    right = correct(student, x_eval, y_eval)
    return {
        "accuracy": float(100.0 * np.mean(right)),
        "correct": right,  # per example, for paired comparisons (not recorded)
        "steps": epochs * steps_per_epoch,
        "unlabelled_steps": unlabelled_steps,
        "final_loss": float(losses[-1]),
        "train_time_s": round(time.time() - start, 1),
    }


# ----------------------------------------------------------------------------- report


def _score(run):
    return run.get("test_accuracy", run.get("validation_accuracy"))


def summarise(results):
    """Markdown: per task the mean ± sample std per method, gains over the
    student and over KD, and the worst seed of `vid` against `student`; a
    table for KD with each feature method and one for the unlabelled-image
    methods where any ran."""
    lines = [
        "| task | teacher | student | kd | fitnet | at | vid | kd+vid "
        "| vid − student (worst seed) | kd+vid − kd |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    unlabelled, combined = [], []
    for task in results["tasks"]:
        by = _by_method(task)
        lines.append(
            f"| {task['name']} | {task['teacher_test_accuracy']:.2f} | "
            + " | ".join(_cell(by, m) for m in METHODS)
            + f" | {_gain(by, 'vid', 'student', True)} | {_gain(by, 'kd+vid', 'kd')} |"
        )
        if any(m in by for m in UNLABELLED_METHODS):
            unlabelled.append(
                f"| {task['name']} | "
                + " | ".join(_cell(by, m) for m in UNLABELLED_METHODS)
                + f" | {_gain(by, 'kd-u', 'kd')} | {_gain(by, 'kd+vid-u', 'kd-u')} |"
            )
        if any(m in by for m in COMBINED_METHODS):
            combined.append(
                f"| {task['name']} | "
                + " | ".join(_cell(by, m) for m in ("kd",) + COMBINED_METHODS + ("kd+vid",))
                + " | "
                + " | ".join(_gain(by, m, "kd") for m in COMBINED_METHODS + ("kd+vid",))
                + " |"
            )
    if combined:
        lines += [
            "",
            "KD with each feature method (KD's temperature, AT's β, FitNet's and VID's defaults):",
            "",
            "| task | kd | kd+fitnet | kd+at | kd+vid "
            "| kd+fitnet − kd | kd+at − kd | kd+vid − kd |",
            "|---|---|---|---|---|---|---|---|",
            *combined,
        ]
    if unlabelled:
        lines += [
            "",
            "With the pool's unlabelled images first (`-u`, the same images for KD and VID):",
            "",
            "| task | kd-u | vid-u | kd+vid-u | kd-u − kd | kd+vid-u − kd-u |",
            "|---|---|---|---|---|---|",
            *unlabelled,
        ]
    return "\n".join(lines)


def _by_method(task):
    by = {}
    for run in task["runs"]:
        by.setdefault(run["method"], {})[run["seed"]] = _score(run)
    return by


def _cell(by, method):
    values = list(by.get(method, {}).values())
    if not values:
        return "–"
    std = np.std(values, ddof=1) if len(values) > 1 else 0.0
    return f"{np.mean(values):.2f} ± {std:.2f} ({len(values)})"


def _gain(by, a, b, worst=False):
    """Mean over the common seeds of a − b (and the worst seed's)."""
    seeds = sorted(set(by.get(a, {})) & set(by.get(b, {})))
    if not seeds:
        return "–"
    diffs = [by[a][s] - by[b][s] for s in seeds]
    return f"{np.mean(diffs):+.2f}" + (f" ({min(diffs):+.2f})" if worst else "")


def readme_rows(results):
    """The README's short table (student, KD, VID, KD + VID and the gains)."""
    rows = []
    for task in results["tasks"]:
        by = _by_method(task)
        if not all(by.get(m) for m in ("student", "kd", "vid", "kd+vid")):
            continue
        label = f"{task['name']} ({task['labelled_per_class']}/class)"
        cells = " | ".join(
            _cell(by, m).rsplit(" (", 1)[0] for m in ("student", "kd", "vid", "kd+vid")
        )
        rows.append(
            f"| {label} | {cells} | {_gain(by, 'vid', 'student', True)} | "
            f"{_gain(by, 'kd+vid', 'kd')} |"
        )
    return "\n".join(rows)


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = results["tasks"]
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(tasks)), 4))
    width = 0.8 / len(METHODS)
    for m, method in enumerate(METHODS):
        for t, task in enumerate(tasks):
            student = {r["seed"]: _score(r) for r in task["runs"] if r["method"] == "student"}
            gains = [
                _score(r) - student[r["seed"]]
                for r in task["runs"]
                if r["method"] == method and r["seed"] in student
            ]
            x = t + (m - (len(METHODS) - 1) / 2) * width
            ax.scatter(
                [x] * len(gains), gains, s=12, color=f"C{m}", label=method if t == 0 else None
            )
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xticks(range(len(tasks)), [t["name"] for t in tasks], rotation=20, ha="right")
    ax.set_ylabel("accuracy − student (points), per seed")
    ax.legend(fontsize=8, ncol=len(METHODS))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ----------------------------------------------------------------------------- main


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", default=",".join(TASKS), help=f"from {','.join(TASKS)}")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--split", choices=("test", "validation"), default="test")
    p.add_argument("--output", default=os.path.join(ROOT, "benchmarks", "accuracy"))
    p.add_argument("--cache-dir", default=os.path.join(ROOT, "runs", "accuracy-teachers"))
    p.add_argument(
        "--vid",
        default=None,
        help="JSON overrides of the VID defaults (sweeps): head options, vid_weight, "
        'task_weight, pairs, "vid_weight_decay": "linear"/"cosine" (λ to 0 over the '
        'labelled phase) or "vid_weight_warmup": a fraction (λ from 0, linearly, over '
        "that fraction of the labelled phase's epochs)",
    )
    p.add_argument("--quick", action="store_true", help="a few steps per task (smoke run)")
    p.add_argument(
        "--readme", action="store_true", help="print the README's table from results.json"
    )
    p.add_argument(
        "--baseline",
        default=None,
        help="an earlier output directory on the same split: reuse its teachers' scores, KD "
        "temperatures and student/kd runs (for sweeps of the VID settings)",
    )
    args = p.parse_args(argv)
    overrides = json.loads(args.vid) if args.vid else None
    settings = vid_settings(overrides)
    os.makedirs(args.output, exist_ok=True)
    path = os.path.join(args.output, "results.json")
    results = {"tasks": []}
    if os.path.exists(path):
        with open(path) as f:
            results = json.load(f)
    if args.readme:
        print(readme_rows(results))
        return results
    results.update(
        split=args.split, backend=keras.backend.backend(), quick=args.quick, machine=_machine()
    )

    def log(message):
        print(message, flush=True)

    def save():
        # Another process may be running other tasks into the same file:
        # keep the tasks it wrote, and this process's own tasks as they are here.
        ours = set(args.tasks.split(","))
        if os.path.exists(path):
            with open(path) as f:
                on_disk = json.load(f)["tasks"]
            mine = {t["name"]: t for t in results["tasks"]}
            merged = []
            for task in on_disk:
                kept = mine.pop(task["name"], None)
                merged.append(kept if task["name"] in ours and kept is not None else task)
            results["tasks"] = merged + list(mine.values())
        with open(path + ".tmp", "w") as f:
            json.dump(results, f, indent=1)
        os.replace(path + ".tmp", path)
        with open(os.path.join(args.output, "results.md"), "w") as f:
            f.write(f"Accuracy (%) on the {args.split} split, mean ± sample std (seeds); "
                    f"backend {keras.backend.backend()}.\n\n{summarise(results)}\n")  # fmt: skip
        if not args.quick:
            plot(results, os.path.join(args.output, "accuracy.png"))

    if args.baseline:
        with open(os.path.join(args.baseline, "results.json")) as f:
            base = {t["name"]: t for t in json.load(f)["tasks"]}
        for name, task in base.items():
            if not any(t["name"] == name for t in results["tasks"]):
                kept = [r for r in task["runs"] if r["method"] in ("student", "kd")]
                results["tasks"].append({**task, "runs": kept})
    seeds = [int(s) for s in args.seeds.split(",")]
    methods = args.methods.split(",")
    known = METHODS + UNLABELLED_METHODS + COMBINED_METHODS
    unknown = sorted(set(methods) - set(known))
    if unknown:
        p.error(f"unknown methods {unknown}; choose from {known}")
    for name in args.tasks.split(","):
        task = TASKS[name]
        entry = next((t for t in results["tasks"] if t["name"] == name), None)
        data = load(task, args.quick)
        teacher = task.teacher(data, args.cache_dir, args.quick)
        steps = 4 if args.quick else task.steps
        if entry is None:
            entry = {
                "name": name,
                "dataset": task.dataset,
                "labelled_per_class": task.labelled_per_class,
                "teacher_test_accuracy": accuracy(teacher, data.x_test, data.y_test),
                "schedule": task.schedule,
                "runs": [],
            }
            results["tasks"].append(entry)
        uses_kd = any(m.startswith("kd") for m in methods)
        if uses_kd:
            temperature = choose_kd_temperature(
                task, data, teacher, settings, steps, entry, args.quick, save, log
            )
            supersede_kd_runs(entry, temperature, log)
            save()
        task_methods = methods
        uses_at = any(m in ("at", "kd+at") for m in methods)
        task_at_pairs = at_pairs(teacher, task.student(data), settings) if uses_at else []
        if uses_at and not task_at_pairs:
            log(f"{name}: at skipped (no pair of feature maps to take attention maps of)")
            task_methods = [m for m in methods if m not in ("at", "kd+at")]
        if uses_at and task_at_pairs and "at_weight" not in entry:  # β chosen on validation
            entry["at_weight"] = choose_at_weight(
                task, data, teacher, settings, steps, entry, args.quick, save, log
            )
            save()
        for seed in seeds:
            for method in task_methods:
                if any(r["method"] == method and r["seed"] == seed for r in entry["runs"]):
                    continue
                run = train_run(
                    task, data, teacher, method, seed, entry.get("kd_temperature"), settings,
                    args.split, steps, entry.get("at_weight"),
                )  # fmt: skip
                key = "test_accuracy" if args.split == "test" else "validation_accuracy"
                run.pop("correct")
                record = {"method": method, "seed": seed, key: run.pop("accuracy")}
                if method.removesuffix("-u") in ("vid", "kd+vid", "fitnet", "kd+fitnet"):
                    record["vid_settings"] = settings
                if method.startswith("kd"):
                    record["kd_temperature"] = entry["kd_temperature"]
                if method in ("at", "kd+at"):
                    record["at_settings"] = {
                        "pairs": task_at_pairs,
                        "at_weight": entry["at_weight"],
                    }
                entry["runs"].append({**record, **run})
                save()
                log(
                    f"{name} {method:7s} seed {seed}: {record[key]:.2f} % "
                    f"({args.split}, {run['train_time_s']:.0f} s)"
                )
    save()
    log(summarise(results))
    return results


def _machine():
    import platform

    return f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}"


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
