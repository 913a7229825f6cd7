"""Write `results/teachers.json` and the raw-RGB `.keras` teachers it lists.

    python results/teachers/make_manifest.py

- `cifar10-cnn-32-64-128-256`: the 80.6 % teacher of `results/cifar10/`
  (`results/cifar10/teacher/teacher.keras`, which reads images normalised
  by the training split's statistics), rebuilt with that normalisation as its
  first layer, so it maps raw RGB (float32 in [0, 255]) to logits;
- `cifar10-airbench-64-256-256`: `results/teachers/airbench.keras`, from
  `python -m keras_vid.experiments.fast_teacher` (already raw RGB), and
  `cifar10-airbench-64-256-256-ls0`, the same recipe without label smoothing
  (`results/teachers/airbench-ls0.keras`), and
  `cifar10-airbench-res-128-512-512-ls0` (`--recipe airbench96`,
  `results/teachers/airbench96.keras`), each once it has trained to the end.

Each entry's `test_accuracy` is measured here, by loading the file and
predicting all 10 000 test images (single view).
"""

import json
import os

import keras
import numpy as np

import keras_vid  # noqa: F401  (registers the custom layers)
from keras_vid.experiments.data import channel_stats

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
DATA = os.path.join(ROOT, "..", "shared", "data")
# fast_teacher's outputs: airbench's recipe as published (label smoothing 0.2)
# and the same without label smoothing, whose logits keep the class similarities.
# airbench96 is the residual recipe, trained without label smoothing too.
AIRBENCH_TEACHERS = (
    "results/teachers/airbench.keras",
    "results/teachers/airbench-ls0.keras",
    "results/teachers/airbench96.keras",
)


def raw_rgb_cnn_teacher(source, target, train_images):
    """`source` (normalised input, a chain of layers) rebuilt on raw RGB
    input: a normalisation layer, then the source's own layers."""
    model = keras.saving.load_model(source, compile=False)
    mean, std = channel_stats(train_images)
    inputs = keras.Input(model.input.shape[1:], name="image")
    x = keras.layers.Normalization(
        mean=list(255.0 * mean), variance=list((255.0 * std) ** 2), name="normalize"
    )(inputs)
    for layer in model.layers[1:]:  # a chain: conv, BN, ReLU, pooling, ..., logits
        x = layer(x)
    rebuilt = keras.Model(inputs, x, name=model.name)
    rebuilt.save(target)


def accuracy(path, images, labels):
    model = keras.saving.load_model(path, compile=False)
    logits = model.predict(images, batch_size=1000, verbose=0)
    return round(float(100.0 * np.mean(np.argmax(logits, -1) == labels)), 2)


def main():
    with np.load(os.path.join(DATA, "cifar10_train.npz")) as f:
        train = f["x"]
    with np.load(os.path.join(DATA, "cifar10_test.npz")) as f:
        test_x, test_y = f["x"].astype("float32"), f["y"]
    entries = []
    cnn_path = "results/teachers/cifar10-cnn-32-64-128-256.keras"
    if not os.path.exists(os.path.join(ROOT, cnn_path)):  # built once, then kept
        raw_rgb_cnn_teacher(
            os.path.join(ROOT, "results/cifar10/teacher/teacher.keras"),
            os.path.join(ROOT, cnn_path),
            train,
        )
    with open(os.path.join(ROOT, "results/cifar10/teacher/teacher.keras.json")) as f:
        record = json.load(f)
    entries.append(
        {
            "name": "cifar10-cnn-32-64-128-256",
            "path": cnn_path,
            "dataset": "cifar10",
            "test_accuracy": accuracy(os.path.join(ROOT, cnn_path), test_x, test_y),
            "train_images": record["train_images"],
            "epochs": record["epochs"],
            "wall_time_s": record["train_time_s"],
            "command": "python -m keras_vid.experiments --dataset "
            "../shared/data/cifar10_{split}.npz --teacher cnn-32,64,128,256 --teacher-epochs 15 "
            "(see results/cifar10/README.md), then python results/teachers/make_manifest.py",
        }
    )
    for airbench_path in AIRBENCH_TEACHERS:
        if not os.path.exists(os.path.join(ROOT, airbench_path + ".json")):
            continue  # not trained (to the end) yet
        with open(os.path.join(ROOT, airbench_path + ".json")) as f:
            record = json.load(f)
        recipe = record["recipe"]
        residual = recipe.get("residual", False)
        widths = ("res-" if residual else "") + "-".join(str(w) for w in recipe["widths"])
        smoothing = recipe["label_smoothing"]
        command = "python -m keras_vid.experiments.fast_teacher" + (
            " --recipe airbench96" if residual else ""
        )
        entries.append(
            {
                "name": f"cifar10-airbench-{widths}" + ("-ls0" if smoothing == 0 else ""),
                "path": airbench_path,
                "dataset": "cifar10",
                "test_accuracy": accuracy(os.path.join(ROOT, airbench_path), test_x, test_y),
                "test_accuracy_tta": record["test_accuracy_tta"],
                "label_smoothing": smoothing,
                "train_images": record["train_images"],
                "epochs": record["epochs"],
                "wall_time_s": record["wall_time_s"],
                "command": f"{command} --output {airbench_path} --epochs {record['epochs']}"
                + (f" --label-smoothing {smoothing:g}" if smoothing != 0.2 else ""),
            }
        )
    with open(os.path.join(ROOT, "results", "teachers.json"), "w") as f:
        json.dump(entries, f, indent=1)
    for entry in entries:
        print(f"{entry['name']}: {entry['test_accuracy']:.2f} % test ({entry['path']})")


if __name__ == "__main__":
    main()
