"""A strong CIFAR teacher in minutes of CPU per epoch: airbench's recipes, resumable.

`python -m keras_vid.experiments.fast_teacher --output results/teachers/airbench.keras`
trains `keras_vid.experiments.models.airbench` on the whole training split with the
airbench94 recipe (written for Keras from its published description):
Nesterov SGD 0.85 with decoupled weight decay, batch-norm shifts at 64× the
learning rate, a linear warm-up (23 % of the steps) then a linear decay,
label smoothing 0.2, alternating horizontal flips (each image is seen in both
orientations in consecutive epochs) and random 2-pixel translations with
reflection padding. airbench94 is run without Lookahead (a few more epochs
stand in for it); the whitening bias trains throughout (airbench: 3 epochs).

`--recipe airbench96` is airbench96's (its 2024 update): the residual network
with widths 128, 512, 512, learning rate 9 and weight decay 0.012 per 1 024
examples, a 10 % warm-up then a decay to zero, 4-pixel translations, a
12-pixel cutout, BatchNorm momentum 0.9 and Lookahead
(`keras_vid.experiments.lookahead`).

Every completed epoch is checkpointed (the model's weights, the optimizer's
state and a JSON record, each its own file of at most the model's size, so a
run that spans machines can commit them); the same command continues from
the last completed epoch, so a run can be stopped at any time. The final
teacher is saved in float32 whatever policy trained it, with its
normalisation inside: it maps raw RGB images (float32 in [0, 255]) to logits.
"""

import argparse
import dataclasses
import json
import math
import os
import time

import keras
import numpy as np

from keras_vid.experiments.epoch_checkpoint import (
    checkpoint_dir,
    load_lookahead_state,
    load_progress,
    restore_model,
    save_checkpoint,
)
from keras_vid.experiments.lookahead import Lookahead
from keras_vid.experiments.models.airbench import airbench
from keras_vid.experiments.precision import resolve_dtype_policy


@keras.saving.register_keras_serializable(package="keras_vid")
class WarmupLinearDecay(keras.optimizers.schedules.LearningRateSchedule):
    """`peak · f(step)`: f rises linearly from `start` to 1 over `warmup_steps`,
    then falls linearly to `end` at `total_steps` (airbench's schedule)."""

    def __init__(self, peak, total_steps, warmup_fraction=0.23, start=0.2, end=0.07):
        self.peak = float(peak)
        self.total_steps = int(total_steps)
        self.warmup_fraction = float(warmup_fraction)
        self.start = float(start)
        self.end = float(end)

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        warmup = max(1.0, float(int(self.total_steps * self.warmup_fraction)))
        decay = max(1.0, self.total_steps - warmup)
        rising = self.start + (1.0 - self.start) * step / warmup
        falling = 1.0 + (self.end - 1.0) * keras.ops.minimum((step - warmup) / decay, 1.0)
        return self.peak * keras.ops.where(step < warmup, rising, falling)

    def get_config(self):
        return {
            "peak": self.peak,
            "total_steps": self.total_steps,
            "warmup_fraction": self.warmup_fraction,
            "start": self.start,
            "end": self.end,
        }


@dataclasses.dataclass
class AirbenchRecipe:
    """airbench94's hyperparameters in its decoupled form.

    `lr` and `weight_decay` are per 1 024 examples of a summed loss, as
    airbench states them; `keras_learning_rate` and `keras_weight_decay`
    convert them for Keras's mean loss and decoupled decay, so the step
    sizes match at any `batch_size`.
    """

    widths: tuple = (64, 256, 256)
    residual: bool = False
    epochs: int = 18
    batch_size: int = 512
    lr: float = 11.5
    momentum: float = 0.85
    weight_decay: float = 0.0153
    warmup_fraction: float = 0.23
    final_lr_fraction: float = 0.07
    bn_momentum: float = 0.6
    label_smoothing: float = 0.2
    translate: int = 2
    cutout: int = 0
    lookahead: bool = False
    whitening_images: int = 5000
    seed: int = 0

    @property
    def keras_learning_rate(self):
        return self.lr * self.batch_size / (1024 * (1 + 1 / (1 - self.momentum)))

    @property
    def keras_weight_decay(self):
        return self.weight_decay / ((1 - self.momentum) * self.lr)

    def build(self, num_classes, input_shape, name=None):
        return airbench(
            self.widths,
            num_classes,
            input_shape,
            bn_momentum=self.bn_momentum,
            residual=self.residual,
            seed=self.seed,
            name=name,
        )

    def optimizer(self, total_steps):
        schedule = WarmupLinearDecay(
            self.keras_learning_rate,
            total_steps,
            warmup_fraction=self.warmup_fraction,
            end=self.final_lr_fraction,
        )
        return keras.optimizers.SGD(
            learning_rate=schedule,
            momentum=self.momentum,
            nesterov=True,
            weight_decay=self.keras_weight_decay,
        )


RECIPES = {
    "airbench94": AirbenchRecipe(),
    "airbench96": AirbenchRecipe(
        widths=(128, 512, 512),
        residual=True,
        epochs=32,
        lr=9.0,
        weight_decay=0.012,
        warmup_fraction=0.1,
        final_lr_fraction=0.0,
        bn_momentum=0.9,
        translate=4,
        cutout=12,
        lookahead=True,
    ),
}


def epoch_images(images, epoch, translate=2, seed=0, cutout=0, fill=0.0):
    """The training images of one epoch: a fixed random half flipped, all of
    them flipped again on odd epochs, then each shifted by up to `translate`
    pixels (reflection padding), then a random `cutout`×`cutout` square of
    each set to `fill` (the mean pixel: zero after normalisation).
    Deterministic in `(epoch, seed)`, so a resumed run sees what an
    uninterrupted one would have."""
    first = np.random.default_rng(seed)
    flipped = first.random(len(images)) < 0.5
    x = np.where(flipped[:, None, None, None], images[:, :, ::-1], images)
    if epoch % 2 == 1:
        x = x[:, :, ::-1]
    rng = np.random.default_rng([seed, epoch])
    out = np.array(x)
    h, w = x.shape[1:3]
    if translate:
        r = translate
        padded = np.pad(x, ((0, 0), (r, r), (r, r), (0, 0)), mode="reflect")
        shifts = rng.integers(-r, r + 1, size=(len(x), 2))
        for sy in range(-r, r + 1):
            for sx in range(-r, r + 1):
                rows = np.flatnonzero((shifts[:, 0] == sy) & (shifts[:, 1] == sx))
                out[rows] = padded[rows, r + sy : r + sy + h, r + sx : r + sx + w]
    if cutout:
        top = rng.integers(0, h - cutout + 1, size=len(x))
        left = rng.integers(0, w - cutout + 1, size=len(x))
        rows = np.abs(np.arange(h)[None] - top[:, None] - (cutout - 1) / 2) < cutout / 2
        cols = np.abs(np.arange(w)[None] - left[:, None] - (cutout - 1) / 2) < cutout / 2
        square = rows[:, :, None] & cols[:, None, :]
        out[square] = fill
    return out


def predict_logits(model, images, batch_size=1000, tta=False):
    """Logits of `model` on raw images; `tta=True` averages airbench's six
    views (mirror × {no shift, 1 pixel up-left, 1 pixel down-right}, the
    shifted views at half weight)."""

    def mirror(x):
        return 0.5 * model.predict(x, batch_size=batch_size, verbose=0) + 0.5 * model.predict(
            np.ascontiguousarray(x[:, :, ::-1]), batch_size=batch_size, verbose=0
        )

    images = np.asarray(images, dtype="float32")
    if not tta:
        return model.predict(images, batch_size=batch_size, verbose=0)
    h, w = images.shape[1:3]
    padded = np.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
    shifted = [padded[:, :h, :w], padded[:, 2 : 2 + h, 2 : 2 + w]]
    return 0.5 * mirror(images) + 0.25 * sum(mirror(np.ascontiguousarray(s)) for s in shifted)


def accuracy(model, images, labels, tta=False):
    """Top-1 accuracy (%) on raw images."""
    logits = predict_logits(model, images, tta=tta)
    return float(100.0 * np.mean(np.argmax(logits, axis=-1) == labels))


def _float32_copy(model, recipe, num_classes, input_shape):
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")
    try:
        copy = recipe.build(num_classes, input_shape, name=model.name)
    finally:
        keras.config.set_dtype_policy(previous)
    copy.set_weights(model.get_weights())
    return copy


def _compiled(recipe, num_classes, input_shape, total_steps):
    model = recipe.build(num_classes, input_shape)
    model.compile(
        optimizer=recipe.optimizer(total_steps),
        loss=keras.losses.CategoricalCrossentropy(
            from_logits=True, label_smoothing=recipe.label_smoothing
        ),
        metrics=["accuracy"],
    )
    model.optimizer.build(model.trainable_variables)
    return model


def load_checkpoint(output, recipe, num_classes, input_shape, total_steps):
    """The compiled model of `recipe` with the weights and optimizer state of
    `output`'s last checkpoint (the dtype policy it trained under must be set)."""
    return restore_model(output, _compiled(recipe, num_classes, input_shape, total_steps))


def train_fast_teacher(
    output,
    train_images,
    train_labels,
    test_images,
    test_labels,
    recipe=None,
    dtype_policy="auto",
    progress_images=None,
    log=print,
    checkpoint_steps=None,
    time_budget_s=None,
):
    """Train (or resume) an airbench teacher and save it to `output` (.keras).

    Progress lives beside it in `<output>.ckpt/` (`checkpoint_dir`): the
    model's weights, the optimizer's state, the Lookahead average and the
    JSON record of the last completed epoch, in files of at most 40 MB.
    Each epoch logs the accuracy on `progress_images` fixed random test
    images (all when None). `dtype_policy="auto"` trains in the precision
    measured fastest here (`keras_vid.experiments.precision`); each epoch's
    is recorded, so a run resumed on another machine may change it. Returns the
    record written to `<output>.json`: test accuracy on all test images
    (single view and with TTA), epochs, wall time, seconds per epoch.

    `checkpoint_steps` also checkpoints every that many steps inside an epoch,
    so a stopped run loses at most that many (an epoch of airbench96 is 40
    minutes on a 2-core AVX2 CPU). `time_budget_s` stops the run at the first
    checkpoint after that many seconds of training and returns None; the same
    call continues it. A resumed run takes the same steps on the same images
    as one that was never stopped.
    """
    if checkpoint_steps is not None and checkpoint_steps < 1:
        raise ValueError(
            f"`checkpoint_steps` must be a positive number of steps or None. "
            f"Received: checkpoint_steps={checkpoint_steps}"
        )
    if time_budget_s is not None and time_budget_s < 0:
        raise ValueError(f"`time_budget_s` must be >= 0. Received: time_budget_s={time_budget_s}")
    recipe = recipe or AirbenchRecipe()
    progress_path = os.path.join(checkpoint_dir(output), "progress.json")
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    num_classes = int(max(np.max(train_labels), np.max(test_labels))) + 1
    input_shape = tuple(train_images.shape[1:])
    steps_per_epoch = math.ceil(len(train_images) / recipe.batch_size)
    total_steps = recipe.epochs * steps_per_epoch
    settings = json.loads(json.dumps(dataclasses.asdict(recipe)))
    progress = {"epochs_done": 0, "epoch_seconds": [], "history": [], "recipe": settings}
    dtype_policy = resolve_dtype_policy(dtype_policy)
    log(f"training in {dtype_policy}")
    previous_policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy(dtype_policy)
    try:
        saved = load_progress(output)
        if saved is not None:
            progress = saved
            trained = progress.get("recipe", settings)
            changed = [k for k in settings if k != "epochs" and trained.get(k) != settings[k]]
            if changed:
                raise ValueError(
                    f"{progress_path} was trained with another recipe (differs in "
                    f"{', '.join(changed)}): resume it with the same arguments (only "
                    "--epochs may grow), or choose another --output. Received: "
                    + ", ".join(f"{k}={settings[k]!r}" for k in changed)
                )
            model = load_checkpoint(output, recipe, num_classes, input_shape, total_steps)
            step = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
            in_epoch = progress.get("partial_epoch", {}).get("steps", 0)
            if step != progress["epochs_done"] * steps_per_epoch + in_epoch:
                raise ValueError(
                    f"{checkpoint_dir(output)}'s optimizer is at step {step}, but "
                    f"{progress_path} records "
                    f"{progress['epochs_done']} epochs of {steps_per_epoch} steps and "
                    f"{in_epoch} more: the checkpoint files are from different "
                    "checkpoints. Restore them together."
                )
            within = f" and step {in_epoch}/{steps_per_epoch} of the next" if in_epoch else ""
            log(
                f"resuming {output} after epoch {progress['epochs_done']}/{recipe.epochs}" + within
            )
        else:
            keras.utils.set_random_seed(recipe.seed)
            model = _compiled(recipe, num_classes, input_shape, total_steps)
            rng = np.random.default_rng(recipe.seed)
            sample = train_images[rng.permutation(len(train_images))[: recipe.whitening_images]]
            normalize = model.get_layer("normalize")
            normalized = keras.ops.convert_to_numpy(normalize(sample.astype("float32")))
            model.get_layer("whiten").set_whitening(normalized)
        targets = keras.ops.convert_to_numpy(keras.ops.one_hot(train_labels, num_classes))
        fill = train_images.reshape(-1, train_images.shape[-1]).mean(axis=0)
        lookahead = Lookahead(model, total_steps) if recipe.lookahead else None
        if lookahead and saved is not None:
            lookahead.restore(load_lookahead_state(output))
        watched = np.random.default_rng(1).permutation(len(test_images))[:progress_images]
        began = time.time()

        def out_of_time():
            return time_budget_s is not None and time.time() - began >= time_budget_s

        for epoch in range(progress["epochs_done"], recipe.epochs):
            start = time.time()
            images = epoch_images(
                train_images, epoch, recipe.translate, recipe.seed, recipe.cutout, fill
            )
            order = np.random.default_rng([recipe.seed, epoch, 1]).permutation(len(images))
            partial = progress.pop("partial_epoch", {"steps": 0, "sums": {}, "seconds": 0.0})
            sums = partial["sums"]
            for batch in range(partial["steps"], steps_per_epoch):
                rows = order[batch * recipe.batch_size : (batch + 1) * recipe.batch_size]
                batch_logs = model.train_on_batch(
                    images[rows].astype("float32"), targets[rows], return_dict=True
                )
                for key, value in batch_logs.items():  # epoch means, as fit logs them
                    sums[key] = sums.get(key, 0.0) + float(value) * len(rows)
                if lookahead:
                    lookahead.after_step(epoch * steps_per_epoch + batch + 1)
                done = batch + 1
                if checkpoint_steps and done % checkpoint_steps == 0 and done < steps_per_epoch:
                    progress["partial_epoch"] = {
                        "steps": done,
                        "sums": sums,
                        "seconds": partial["seconds"] + time.time() - start,
                    }
                    save_checkpoint(output, model, progress, lookahead)
                    del progress["partial_epoch"]
                    if out_of_time():
                        log(
                            f"stopped after step {done}/{steps_per_epoch} of epoch "
                            f"{epoch + 1}/{recipe.epochs} (time budget spent); the same "
                            "command continues from there"
                        )
                        return None
            seconds = partial["seconds"] + time.time() - start
            test = accuracy(model, test_images[watched], test_labels[watched])
            logs = {k: v / len(images) for k, v in sums.items()}
            progress["epochs_done"] = epoch + 1
            progress["epoch_seconds"].append(round(seconds, 1))
            # Epochs of a checkpoint from before this record have None.
            policies = progress.setdefault("epoch_dtype_policies", [])
            policies.extend([None] * (epoch - len(policies)))
            policies.append(dtype_policy)
            progress["history"].append({**logs, "test_accuracy": test})
            save_checkpoint(output, model, progress, lookahead)
            log(
                f"epoch {epoch + 1}/{recipe.epochs}: loss {logs['loss']:.4f}, train acc "
                f"{100 * logs['accuracy']:.2f}, test {test:.2f} % on {len(watched)} "
                f"images ({seconds:.0f} s, "
                f"{len(images) / seconds:.0f} images/s)"
            )
            if out_of_time() and epoch + 1 < recipe.epochs:
                log("stopped: time budget spent; the same command continues from here")
                return None
    finally:
        keras.config.set_dtype_policy(previous_policy)
    teacher = _float32_copy(model, recipe, num_classes, input_shape)
    record = {
        "test_accuracy": accuracy(teacher, test_images, test_labels),
        "test_accuracy_tta": accuracy(teacher, test_images, test_labels, tta=True),
        "train_images": int(len(train_images)),
        "epochs": recipe.epochs,
        "wall_time_s": round(sum(progress["epoch_seconds"]), 1),
        "epoch_seconds": progress["epoch_seconds"],
        "dtype_policy": dtype_policy,
        "epoch_dtype_policies": progress.get("epoch_dtype_policies", []),
        "backend": keras.backend.backend(),
        "recipe": dataclasses.asdict(recipe),
        "history": progress["history"],
    }
    teacher.save(output)
    with open(output + ".json", "w") as file:
        json.dump(record, file, indent=1)
    log(
        f"teacher saved to {output}: test {record['test_accuracy']:.2f} % single view, "
        f"{record['test_accuracy_tta']:.2f} % with TTA, {record['wall_time_s']:.0f} s"
    )
    return record


def _load_npz(path):
    with np.load(path) as data:
        return data["x"], data["y"].astype("int64")


def main(argv=None):
    p = argparse.ArgumentParser(
        prog="python -m keras_vid.experiments.fast_teacher",
        description="Train (or resume) an airbench CIFAR teacher. Unset options take "
        "the recipe's value.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--output", required=True, help="the teacher's .keras path")
    p.add_argument("--recipe", choices=sorted(RECIPES), default="airbench94")
    p.add_argument("--train", default="../shared/data/cifar10_train.npz")
    p.add_argument("--test", default="../shared/data/cifar10_test.npz")
    p.add_argument("--widths", default=None, help="e.g. 64,256,256")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--limit", type=int, default=None, help="train on N random images only (smoke runs)"
    )
    p.add_argument(
        "--label-smoothing",
        type=float,
        default=None,
        help="airbench's 0.2 flattens the non-target logits a KD student learns from "
        "(results/teachers/dark_knowledge.py); 0 keeps them",
    )
    p.add_argument(
        "--dtype-policy",
        default="auto",
        help="float32, mixed_bfloat16, or auto: the faster of the two, timed here "
        "(bfloat16 is fast on AMX or AVX-512 BF16 CPUs and GPUs, and an order of "
        "magnitude slower on AVX2-only CPUs)",
    )
    p.add_argument(
        "--checkpoint-steps",
        type=int,
        default=None,
        help="also checkpoint every N steps inside an epoch (a stopped run loses at most N)",
    )
    p.add_argument(
        "--stop-after-minutes",
        type=float,
        default=None,
        help="stop at the first checkpoint after this much training; the same command "
        "continues (for runs that span sessions or machines)",
    )
    p.add_argument(
        "--progress-images",
        type=int,
        default=None,
        help="score each epoch on N fixed random test images (all when unset)",
    )
    args = p.parse_args(argv)
    x, y = _load_npz(args.train)
    xt, yt = _load_npz(args.test)
    if args.limit:  # the files are sorted by class: take a random subset
        keep = np.random.default_rng(0).permutation(len(x))[: args.limit]
        x, y = x[keep], y[keep]
    overrides = {
        "widths": args.widths and tuple(int(w) for w in args.widths.split(",")),
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "label_smoothing": args.label_smoothing,
    }
    recipe = dataclasses.replace(
        RECIPES[args.recipe],
        seed=args.seed,
        **{k: v for k, v in overrides.items() if v is not None},
    )
    return train_fast_teacher(
        args.output,
        x,
        y,
        xt,
        yt,
        recipe=recipe,
        dtype_policy=args.dtype_policy,
        progress_images=args.progress_images,
        checkpoint_steps=args.checkpoint_steps,
        time_budget_s=None if args.stop_after_minutes is None else 60 * args.stop_after_minutes,
    )


if __name__ == "__main__":
    main()
