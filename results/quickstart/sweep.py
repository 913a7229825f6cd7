"""Choose the quickstart's settings on a validation split of the digits.

The quickstart (`examples/quickstart.py`) scores the digits' 33 % test split;
this script never touches it. It carves a stratified validation split (30 %)
out of the quickstart's training split, trains the teacher on the rest, and
compares student vs student + VID for each setting over the same seeds
(same images and initial weights per seed):

    KERAS_BACKEND=tensorflow python results/quickstart/sweep.py --seeds 5

Settings: where the pairs read the stage features (after each stage's ReLU,
or before it: the BatchNormalization output), λ per pair, student epochs;
`--points logits` keeps only the VID-LP pair, `--points kd` trains with KD
(T = 4, the weight from `--weights`) for comparison.
"""

import argparse
import itertools
import json
import os
import sys
import time

import keras
import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "examples"))
from quickstart import CE, accuracy, cnn, per_class_subset  # noqa: E402

from keras_vid import VIDDistiller  # noqa: E402


class Shifted(keras.utils.PyDataset):
    """Batches of `(x, y)` with every image shifted at random by up to
    `shift` pixels (zero padding, then a random crop back to size): the
    digits' version of CIFAR's pad-and-crop augmentation. A new draw every
    epoch, from a generator seeded once, so a run is repeatable."""

    def __init__(self, x, y, batch_size, shift=1, seed=0):
        super().__init__()
        self.x, self.y, self.batch_size, self.shift = x, y, batch_size, shift
        self.rng = np.random.default_rng(seed)
        self.order = self.rng.permutation(len(x))

    def __len__(self):
        return -(-len(self.x) // self.batch_size)

    def __getitem__(self, index):
        rows = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        s, (h, w) = self.shift, self.x.shape[1:3]
        padded = np.pad(self.x[rows], ((0, 0), (s, s), (s, s), (0, 0)))
        offsets = self.rng.integers(0, 2 * s + 1, size=(len(rows), 2))
        x = np.stack([p[i : i + h, j : j + w] for p, (i, j) in zip(padded, offsets)])
        return x, self.y[rows]

    def on_epoch_end(self):
        self.order = self.rng.permutation(len(self.x))


def pairs_at(point):
    """The quickstart's pairs (`output`, `pre-activation`), only its VID-LP
    pair (`logits`), or none (`kd`: Hinton's KD at T = 4 instead)."""
    if point == "kd":
        return []
    if point == "logits":
        return [("s_pool", "t_logits")]
    stage = "bn" if point == "pre-activation" else "stage"
    return [(f"s_{stage}{k}", f"t_{stage}{k}") for k in (1, 2, 3)] + [("s_pool", "t_logits")]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--per-class", type=int, default=10)
    parser.add_argument("--points", default="output,pre-activation")
    parser.add_argument("--weights", default="10,30")
    parser.add_argument("--epochs", default="60,120")
    parser.add_argument(
        "--transfer-epochs",
        type=int,
        default=0,
        help="before the labelled fit, fit VID on all the teacher's training images, "
        "unlabelled, for this many epochs",
    )
    parser.add_argument("--shift", type=int, default=0, help="augment: shift up to N pixels")
    parser.add_argument("--out", default=None, help="a JSON file for the results")
    args = parser.parse_args()

    digits = load_digits()
    x = (digits.images / 16.0).astype("float32")[..., None]
    x_train, _, y_train, _ = train_test_split(
        x, digits.target, test_size=0.33, stratify=digits.target, random_state=0
    )
    x_fit, x_val, y_fit, y_val = train_test_split(
        x_train, y_train, test_size=0.3, stratify=y_train, random_state=1
    )
    keras.utils.set_random_seed(0)
    teacher = cnn("t", (32, 64, 128), "teacher")
    teacher.compile(optimizer=keras.optimizers.Adam(3e-3), loss=CE)
    teacher.fit(x_fit, y_fit, batch_size=64, epochs=30, verbose=0)
    print(f"teacher validation accuracy {100 * accuracy(teacher, x_val, y_val):.1f}", flush=True)

    def fit(model, xs, ys, seed, epochs):
        if args.shift:
            data = Shifted(xs, ys, batch_size=32, shift=args.shift, seed=seed)
            model.fit(data, epochs=epochs, verbose=0)
        else:
            model.fit(xs, ys, batch_size=32, epochs=epochs, verbose=0)

    rows = []
    epochs_list = [int(e) for e in args.epochs.split(",")]
    for epochs in epochs_list:
        student_accs = []
        for seed in range(args.seeds):
            xs, ys = per_class_subset(x_fit, y_fit, args.per_class, seed)
            keras.utils.set_random_seed(seed)
            student = cnn("s", (8, 16, 32), "student")
            student.compile(optimizer=keras.optimizers.Adam(3e-3), loss=CE)
            fit(student, xs, ys, seed, epochs)
            student_accs.append(100 * accuracy(student, x_val, y_val))
        print(f"student, {epochs} epochs: {np.mean(student_accs):.1f}", flush=True)
        for point, weight in itertools.product(
            args.points.split(","), [float(w) for w in args.weights.split(",")]
        ):
            accs, start = [], time.perf_counter()
            for seed in range(args.seeds):
                xs, ys = per_class_subset(x_fit, y_fit, args.per_class, seed)
                keras.utils.set_random_seed(seed)
                student = cnn("s", (8, 16, 32), "student")
                model = VIDDistiller(teacher, student, pairs=pairs_at(point))
                weights = (
                    {"kd_weight": weight, "temperature": 4.0}
                    if point == "kd"
                    else {"vid_weight": weight}
                )
                model.compile(optimizer=keras.optimizers.Adam(3e-3), loss=CE, **weights)
                if args.transfer_epochs:
                    model.fit(x_fit, batch_size=32, epochs=args.transfer_epochs, verbose=0)
                fit(model, xs, ys, seed, epochs)
                accs.append(100 * accuracy(student, x_val, y_val))
            gains = np.array(accs) - np.array(student_accs)
            row = {
                "point": point,
                "vid_weight": weight,
                "epochs": epochs,
                "student": student_accs,
                "vid": accs,
                "gain_mean": float(gains.mean()),
                "gain_std": float(gains.std()),
                "seconds": time.perf_counter() - start,
            }
            rows.append(row)
            print(
                f"{point:>14} λ {weight:>4g} {epochs:>4} epochs: VID {np.mean(accs):.1f} "
                f"(student {np.mean(student_accs):.1f}), gain {gains.mean():+.1f} ± "
                f"{gains.std():.1f}, per seed {', '.join(f'{g:+.1f}' for g in gains)}",
                flush=True,
            )
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"backend": keras.backend.backend(), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
