"""Quickstart: distil a CNN teacher into a small student with VID.

Runs offline on any backend (`KERAS_BACKEND=tensorflow|jax|torch`) with the
8×8 handwritten digits that ship inside scikit-learn:

1. train a teacher CNN on the full training split (1 203 labelled images);
2. train a small student on only a few labelled images per class, three ways:
   with labels alone; with VID on those same images (the paper's protocol);
   and with VID that first also reads the rest of the training images
   without their labels (what a user with a trained teacher usually has: the
   teacher's own training images, or any unlabelled images of the domain);
3. print test accuracy and training time of each, and VID's gain over the
   plain student seed by seed (the same labelled images and initial weights
   for all three).

    python examples/quickstart.py [--per-class 10] [--seeds 3]

VID uses the library's defaults (no setting tuned for this data); the pairs
and the unlabelled epochs were chosen on a validation split carved out of the
training split, never on the test split: see `results/quickstart/README.md`.
"""

import argparse
import time
import warnings

import keras
import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from keras_vid import VIDDistiller

CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


"""
## The models and the data

A teacher CNN with 32/64/128 channels and a student with 8/16/32, both named
so that their stage outputs can be paired; a per-class subset of the
training images is the student's labelled data.
"""


def cnn(prefix, widths, name):
    """A small CNN whose stage outputs are named `<prefix>_stage1..3` and
    whose features before each stage's ReLU are `<prefix>_bn1..3`."""
    inputs = keras.Input((8, 8, 1))
    x = inputs
    for stage, width in enumerate(widths, start=1):
        x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False)(x)
        x = keras.layers.BatchNormalization(momentum=0.9, name=f"{prefix}_bn{stage}")(x)
        x = keras.layers.ReLU(name=f"{prefix}_stage{stage}")(x)
        if stage < len(widths):
            x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.GlobalAveragePooling2D(name=f"{prefix}_pool")(x)
    outputs = keras.layers.Dense(10, name=f"{prefix}_logits")(x)
    return keras.Model(inputs, outputs, name=name)


def per_class_subset(x, y, per_class, seed):
    rng = np.random.default_rng(seed)
    index = np.concatenate(
        [rng.choice(np.flatnonzero(y == c), per_class, replace=False) for c in range(10)]
    )
    return x[index], y[index]


def accuracy(model, x, y):
    return float(np.mean(np.argmax(model.predict(x, verbose=0), axis=-1) == y))


"""
## Train the teacher, then the students

Each seed trains three students from the same initial weights: labels alone,
VID on the same labelled images, and VID that first reads every training
image without its label (`distiller.fit(x)` with no `y`).
"""


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=10, help="student images per class")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=60, help="student epochs")
    parser.add_argument("--teacher-epochs", type=int, default=30)
    parser.add_argument(
        "--vid-weight", type=float, default=None, help="λ per pair (default: the library's)"
    )
    parser.add_argument(
        "--min-variance",
        type=float,
        default=None,
        help="VIDHead floor on σ² (default: the library's)",
    )
    parser.add_argument(
        "--unlabelled-epochs",
        type=int,
        default=5,
        help="epochs of VID alone over all training images, labels unused, before the "
        "labelled fit (the third row)",
    )
    args = parser.parse_args(argv)

    digits = load_digits()
    x = (digits.images / 16.0).astype("float32")[..., None]
    x_train, x_test, y_train, y_test = train_test_split(
        x, digits.target, test_size=0.33, stratify=digits.target, random_state=0
    )

    keras.utils.set_random_seed(0)
    teacher = cnn("t", (32, 64, 128), "teacher")
    teacher.compile(optimizer=keras.optimizers.Adam(3e-3), loss=CE)
    start = time.perf_counter()
    teacher.fit(x_train, y_train, batch_size=64, epochs=args.teacher_epochs, verbose=0)
    rows = [
        ("teacher (all data)", [accuracy(teacher, x_test, y_test)], time.perf_counter() - start)
    ]

    pairs = [
        ("s_stage1", "t_stage1"),
        ("s_stage2", "t_stage2"),
        ("s_stage3", "t_stage3"),
        ("s_pool", "t_logits"),  # VID-LP: penultimate layer → teacher logits
    ]
    labelled = f"{args.per_class}/class"
    methods = ("student", "student + VID", "student + VID + unlabelled")
    results = {method: ([], 0.0) for method in methods}
    for seed in range(args.seeds):
        xs, ys = per_class_subset(x_train, y_train, args.per_class, seed)
        for method in methods:
            keras.utils.set_random_seed(seed)
            student = cnn("s", (8, 16, 32), "student")
            optimizer = keras.optimizers.Adam(3e-3)
            start = time.perf_counter()
            if method == "student":
                model = student
                model.compile(optimizer=optimizer, loss=CE)
            else:
                floor = args.min_variance
                options = None if floor is None else {"min_variance": floor}
                model = VIDDistiller(teacher, student, pairs=pairs, head_options=options)
                weight = {} if args.vid_weight is None else {"vid_weight": args.vid_weight}
                model.compile(optimizer=optimizer, loss=CE, **weight)
            if method.endswith("unlabelled") and args.unlabelled_epochs:
                # x alone: the steps have no task loss, only the VID terms. The
                # student's last layer gets no gradient there (Keras warns so).
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", message="Gradients do not exist")
                    model.fit(x_train, batch_size=32, epochs=args.unlabelled_epochs, verbose=0)
            model.fit(xs, ys, batch_size=32, epochs=args.epochs, verbose=0)
            accs, seconds = results[method]
            results[method] = (
                accs + [accuracy(student, x_test, y_test)],
                seconds + time.perf_counter() - start,
            )
    for method, (accs, seconds) in results.items():
        rows.append((f"{method} ({labelled})", accs, seconds / args.seeds))

    print(f"\nbackend: {keras.backend.backend()}, test images: {len(y_test)}, seeds: {args.seeds}")
    width = max(len(name) for name, _, _ in rows)
    print(f"| {'model':<{width}} | {'test accuracy':>15} | {'train time (s)':>14} |")
    print(f"|{'-' * (width + 2)}|{'-' * 17}|{'-' * 16}|")
    for name, accs, seconds in rows:
        spread = f" ± {np.std(accs) * 100:.1f}" if len(accs) > 1 else ""
        print(f"| {name:<{width}} | {np.mean(accs) * 100:>8.1f}{spread:>7} | {seconds:>14.1f} |")
    student_accs = np.array(results["student"][0])
    print(f"\nseed spread (std) of the student alone: {100 * np.std(student_accs):.1f} points")
    for method in methods[1:]:
        gains = 100 * (np.array(results[method][0]) - student_accs)
        per_seed = ", ".join(f"{g:+.1f}" for g in gains)
        print(
            f"{method} − student: {np.mean(gains):+.1f} points (std {np.std(gains):.1f} "
            f"over {len(gains)} seeds; per seed {per_seed})"
        )


if __name__ == "__main__":
    main()
