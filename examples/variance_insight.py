"""Variance insight: which teacher channels does the student give up on?

Distils a CNN teacher into a small student on scikit-learn's 8×8 digits
(offline, any backend) with

- `WeightSchedule`: λ decays from 2 to 0.5 (cosine) while the KD weight
  ramps up from 0 to 1 (linear) over the run;
- `VarianceMonitor`: the min/median/max of each pair's learned σ², logged
  every epoch;

then prints how σ² moved and plots every pair's learned σ² per channel,
marking the channels the student ignores (σ² at least the teacher channel's
own variance: the head predicts them no better than their mean).

    python examples/variance_insight.py [--out docs/images/variance.png]
"""

import argparse
import time

import keras
import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from keras_vid import VIDDistiller
from keras_vid.callbacks import EpochSchedule, VarianceMonitor, WeightSchedule
from keras_vid.variance_plot import plot_variance

CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
PAIRS = [
    ("s_stage1", "t_stage1"),
    ("s_stage2", "t_stage2"),
    ("s_stage3", "t_stage3"),
    ("s_pool", "t_logits"),  # VID-LP
]


def cnn(prefix, widths, name):
    """A small CNN whose stage outputs are named `<prefix>_stage1..3`."""
    inputs = keras.Input((8, 8, 1))
    x = inputs
    for stage, width in enumerate(widths, start=1):
        x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False)(x)
        x = keras.layers.BatchNormalization(momentum=0.9)(x)
        x = keras.layers.ReLU(name=f"{prefix}_stage{stage}")(x)
        if stage < len(widths):
            x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.GlobalAveragePooling2D(name=f"{prefix}_pool")(x)
    outputs = keras.layers.Dense(10, name=f"{prefix}_logits")(x)
    return keras.Model(inputs, outputs, name=name)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/images/variance.png", help="PNG to write")
    parser.add_argument("--epochs", type=int, default=30, help="student epochs")
    parser.add_argument("--teacher-epochs", type=int, default=10)
    parser.add_argument("--samples", type=int, default=None, help="training images (all)")
    parser.add_argument(
        "--threshold",
        type=float,
        default=0.5,
        help="a channel is ignored when σ² ≥ threshold × the teacher channel's variance",
    )
    args = parser.parse_args(argv)

    digits = load_digits()
    x = (digits.images / 16.0).astype("float32")[..., None]
    x_train, x_test, y_train, y_test = train_test_split(
        x, digits.target, test_size=0.33, stratify=digits.target, random_state=0
    )
    if args.samples:
        x_train, y_train = x_train[: args.samples], y_train[: args.samples]

    start = time.perf_counter()
    keras.utils.set_random_seed(0)
    teacher = cnn("t", (32, 64, 128), "teacher")
    teacher.compile(optimizer=keras.optimizers.Adam(3e-3), loss=CE)
    teacher.fit(x_train, y_train, batch_size=64, epochs=args.teacher_epochs, verbose=0)

    student = cnn("s", (4, 8, 8), "student")  # too small to mimic every channel
    # σ² moves at the optimizer's pace: starting it near the teacher
    # features' scale (instead of the default 5) lets it settle in a short run.
    distiller = VIDDistiller(teacher, student, pairs=PAIRS, head_options={"init_variance": 1.0})
    distiller.compile(
        optimizer=keras.optimizers.Adam(1e-2), loss=CE, metrics=["accuracy"], kd_weight=1.0
    )
    schedule = WeightSchedule(
        vid_weight=EpochSchedule("cosine", start=2.0, end=0.5, epochs=args.epochs),
        kd_weight=EpochSchedule("linear", start=0.0, end=1.0, epochs=args.epochs),
    )
    history = distiller.fit(
        x_train,
        y_train,
        batch_size=64,
        epochs=args.epochs,
        verbose=0,
        callbacks=[schedule, VarianceMonitor()],
    ).history

    accuracy = np.mean(np.argmax(student.predict(x_test, verbose=0), axis=-1) == y_test)
    print(f"backend: {keras.backend.backend()}, student test accuracy: {accuracy * 100:.1f}%")
    print("epoch   λ      kd    " + "  ".join(f"σ² median pair {k}" for k in range(len(PAIRS))))
    for epoch in sorted({0, len(history["loss"]) // 2, len(history["loss"]) - 1}):
        medians = "  ".join(
            f"{history[f'sigma2_median_{k}'][epoch]:>16.3f}" for k in range(len(PAIRS))
        )
        print(
            f"{epoch:>5}  {history['vid_weight_0'][epoch]:.2f}  "
            f"{history['kd_weight'][epoch]:.2f}  {medians}"
        )
    summary = plot_variance(distiller, args.out, x=x_train, threshold=args.threshold)
    for (s_name, t_name), pair in zip(PAIRS, summary):
        print(f"{s_name} → {t_name}: {len(pair.ignored)}/{len(pair.variance)} channels ignored")
    print(f"wrote {args.out} ({time.perf_counter() - start:.0f} s)")
    return history, summary


if __name__ == "__main__":
    main()
