"""Running the grid: a cached teacher, then methods × images per class × seeds."""

import dataclasses
import hashlib
import json
import math
import os
import time

import keras
import numpy as np

from keras_vid.experiments.architectures import parse_architecture
from keras_vid.experiments.data import channel_stats, load_split, make_dataset, subsample_per_class
from keras_vid.experiments.models.airbench import reading_normalised_input
from keras_vid.experiments.recipes import build_method


@dataclasses.dataclass
class DataConfig:
    """Where the data comes from and which split the students are scored on.

    `eval_per_class` scores a stratified, fixed subset of the test split
    (the same for every run); `None` scores all of it. `teacher_per_class`
    trains the teacher on a subset (`None`: the whole training split).
    `validation_per_class` carves a stratified validation split (seeded,
    the same for every run) out of the training split: students never train
    on it, whatever `score_on` says; `score_on="validation"` scores the
    students on it instead of on the test split (for choosing
    hyperparameters), `"test"` (default) on the test split. The teacher is
    always scored on the test split.
    """

    source: str = "cifar10"
    train_split: str = "train"
    test_split: str = "test"
    data_dir: str | None = None
    eval_per_class: int | None = None
    teacher_per_class: int | None = None
    validation_per_class: int | None = None
    score_on: str = "test"


VALIDATION_SEED = 2019


@dataclasses.dataclass
class Dataset:
    """The splits in memory plus the training split's normalisation.

    `student_pool` indexes the training images students may train on (all
    of them but the validation split); `scored_images`/`scored_labels` are
    what students are scored on (the validation or the test split).
    """

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    class_names: list
    mean: np.ndarray
    std: np.ndarray
    student_pool: np.ndarray | None = None
    scored_images: np.ndarray | None = None
    scored_labels: np.ndarray | None = None
    scored_on: str = "test"

    def student_indices(self, per_class, seed):
        """`per_class` training images per class for one student, from the pool."""
        pool = (
            np.arange(len(self.train_labels)) if self.student_pool is None else self.student_pool
        )
        return pool[subsample_per_class(self.train_labels[pool], per_class, seed)]

    @property
    def input_shape(self):
        return tuple(self.train_images.shape[1:])

    @property
    def num_classes(self):
        return len(self.class_names)


def load_dataset(config):
    """Read the splits and compute per-channel statistics on the training split."""
    train = load_split(config.source, config.train_split, data_dir=config.data_dir)
    test = load_split(config.source, config.test_split, data_dir=config.data_dir)
    if config.score_on not in ("test", "validation"):
        raise ValueError(
            f"`score_on` must be 'test' or 'validation'. Received: {config.score_on!r}"
        )
    if config.score_on == "validation" and not config.validation_per_class:
        raise ValueError("Scoring on the validation split needs `validation_per_class`.")
    test_index = subsample_per_class(test.labels, config.eval_per_class, seed=0)
    mean, std = channel_stats(train.images)
    data = Dataset(
        train.images,
        train.labels,
        test.images[test_index],
        test.labels[test_index],
        train.class_names,
        mean,
        std,
    )
    data.scored_images, data.scored_labels = data.test_images, data.test_labels
    if config.validation_per_class:
        validation = subsample_per_class(
            train.labels, config.validation_per_class, seed=VALIDATION_SEED
        )
        data.student_pool = np.setdiff1d(np.arange(len(train.labels)), validation)
        if config.score_on == "validation":
            data.scored_images = train.images[validation]
            data.scored_labels = train.labels[validation]
            data.scored_on = "validation"
    return data


def _loss():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def evaluate_accuracy(model, data, batch_size=500, split="scored"):
    """Top-1 accuracy (%) of `model` (logits) on the scored (validation or
    test) images, or with `split="test"` on the test images."""
    images, labels = (
        (data.test_images, data.test_labels)
        if split == "test" or data.scored_images is None
        else (data.scored_images, data.scored_labels)
    )
    dataset = make_dataset(
        images,
        labels,
        batch_size=batch_size,
        mean=data.mean,
        std=data.std,
    ).map(lambda x, y: x)
    logits = model.predict(dataset, verbose=0)
    return float(100.0 * np.mean(np.argmax(logits, axis=-1) == labels))


class EpochLog(keras.callbacks.Callback):
    """One line per `every` epochs (and the last) through `log`, so a long
    run shows progress without Keras's progress bar."""

    def __init__(self, label, epochs, log=print, every=None):
        super().__init__()
        self.label, self.epochs, self.log = label, epochs, log
        self.every = every or max(1, epochs // 10)
        self._start = None

    def on_train_begin(self, logs=None):
        self._start = time.time()

    def on_epoch_end(self, epoch, logs=None):
        done = epoch + 1
        if done % self.every and done != self.epochs:
            return
        values = ", ".join(
            f"{k} {float(v):.4g}" for k, v in (logs or {}).items() if k in ("loss", "accuracy")
        )
        self.log(
            f"{self.label}: epoch {done}/{self.epochs}, {values} "
            f"({time.time() - self._start:.0f} s)"
        )


def train(model, compile_kwargs, data, indices, training, seed, verbose=0, log=None, label=""):
    """Compile `model` with the shared recipe and fit it on `indices` of the
    training split; with `log` (and `verbose=0`), one progress line per tenth
    of the epochs."""
    epochs = training.epochs_for(len(indices))
    steps_per_epoch = math.ceil(len(indices) / training.batch_size)
    model.compile(
        optimizer=training.optimizer(epochs * steps_per_epoch),
        loss=_loss(),
        metrics=["accuracy"],
        **compile_kwargs,
    )
    dataset = make_dataset(
        data.train_images[indices],
        data.train_labels[indices],
        batch_size=training.batch_size,
        mean=data.mean,
        std=data.std,
        training=True,
        augmentation=training.augmentation,
        flip=training.flip,
        seed=seed,
    )
    callbacks = [EpochLog(label, epochs, log)] if log is not None and not verbose else []
    history = model.fit(
        dataset, epochs=epochs, verbose=verbose, shuffle=False, callbacks=callbacks
    )
    history.history.pop("lr", None)
    return epochs, epochs * steps_per_epoch, history.history


def _teacher_key(arch, data_config, training, data, seed):
    description = json.dumps(
        {
            "arch": arch,
            "source": os.path.basename(os.fspath(data_config.source)),
            "train_split": data_config.train_split,
            "per_class": data_config.teacher_per_class,
            "input_shape": list(data.input_shape),
            "num_classes": data.num_classes,
            "training": dataclasses.asdict(training),
            "seed": seed,
        },
        sort_keys=True,
    )
    return hashlib.sha256(description.encode()).hexdigest()[:12]


def get_teacher(
    arch, data_config, training, data, cache_dir, seed=0, log=print, path=None, verbose=0
):
    """Load the cached teacher for this configuration, or train and cache it.

    `path` names a saved teacher (`.keras`, with its `.keras.json` record
    beside it when it was trained here) to load instead of looking it up by
    configuration. Returns `(teacher, info)` with `info` holding the test
    accuracy, the training time and the cache path.
    """
    given = path is not None
    architecture = parse_architecture(arch)
    if architecture.raw_input and not given:
        architecture.build(data.num_classes, data.input_shape)  # raises: how to train it
    if not given:
        key = _teacher_key(arch, data_config, training, data, seed)
        os.makedirs(cache_dir, exist_ok=True)
        path = os.path.join(cache_dir, f"teacher-{arch.replace(',', '_')}-{key}.keras")
    elif not os.path.exists(path):
        raise FileNotFoundError(f"No saved teacher at {path!r}.")
    meta_path = path + ".json"
    if os.path.exists(path):
        teacher = keras.saving.load_model(path, compile=False)
        if architecture.raw_input:  # it normalises raw RGB itself; the CLI feeds normalised
            teacher = reading_normalised_input(teacher, data.mean, data.std)
        info = {"arch": arch, "train_accuracy_note": "loaded"}
        if os.path.exists(meta_path) and not given:
            with open(meta_path) as file:
                info = json.load(file)
        log(f"teacher {arch}: loaded from {path} ({info['train_accuracy_note']})")
    else:
        keras.utils.set_random_seed(seed)
        teacher = architecture.build(data.num_classes, data.input_shape, "teacher")
        indices = subsample_per_class(data.train_labels, data_config.teacher_per_class, seed)
        log(f"teacher {arch}: training on {len(indices)} images ...")
        start = time.time()
        epochs, steps, _ = train(
            teacher, {}, data, indices, training, seed, verbose, log, f"teacher {arch}"
        )
        info = {
            "arch": arch,
            "train_images": int(len(indices)),
            "epochs": epochs,
            "steps": steps,
            "train_time_s": round(time.time() - start, 1),
            "train_accuracy_note": "trained here",
        }
        teacher.compile()  # drop the optimizer state from the saved file
        teacher.save(path)
        info["train_accuracy_note"] = f"trained in {info['train_time_s']} s"
    scored = {"eval_per_class": data_config.eval_per_class, "test_split": data_config.test_split}
    if info.get("scored_on") != scored or "test_accuracy" not in info:
        info["test_accuracy"] = evaluate_accuracy(teacher, data, split="test")
        info["scored_on"] = scored
    info["cache_path"] = path
    if given:  # a teacher saved elsewhere keeps its own record: scored again each time
        log(f"teacher {arch}: test accuracy {info['test_accuracy']:.2f} %")
        return teacher, info
    with open(meta_path, "w") as file:
        json.dump({k: v for k, v in info.items() if k != "cache_path"}, file, indent=1)
    log(f"teacher {arch}: test accuracy {info['test_accuracy']:.2f} %")
    return teacher, info


def run_one(
    method,
    teacher,
    teacher_arch,
    student_arch,
    data,
    per_class,
    seed,
    training,
    methods,
    verbose=0,
):
    """Train one student with `method` on `per_class` images per class; return its record.

    `accuracy` is scored on `data`'s scored split, named by `scored_on`
    (`test_accuracy` repeats it when that is the test split)."""
    keras.utils.set_random_seed(1000 + seed)
    t_arch, s_arch = parse_architecture(teacher_arch), parse_architecture(student_arch)
    student = s_arch.build(data.num_classes, data.input_shape, "student")
    model, compile_kwargs = build_method(method, teacher, student, t_arch, s_arch, methods)
    indices = data.student_indices(per_class, seed)
    start = time.time()
    epochs, steps, history = train(
        model, compile_kwargs, data, indices, training, seed, verbose=verbose
    )
    seconds = time.time() - start
    accuracy = evaluate_accuracy(student, data)
    record = {
        "method": method,
        "per_class": per_class,
        "seed": seed,
        "train_images": int(len(indices)),
        "epochs": epochs,
        "steps": steps,
        "accuracy": accuracy,
        "scored_on": data.scored_on,
        "final_train_loss": float(history["loss"][-1]),
        "train_time_s": round(seconds, 1),
    }
    if data.scored_on == "test":
        record["test_accuracy"] = accuracy
    for name, values in history.items():
        if name.startswith("vid_") or name in ("task_loss", "kd_loss"):
            record[f"final_{name}"] = float(values[-1])
    return record
