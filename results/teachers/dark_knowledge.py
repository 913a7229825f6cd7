"""How much a teacher's logits say beyond the label: its non-target classes.

    python results/teachers/dark_knowledge.py

For each teacher of `results/teachers.json`, on 2 000 training images (the
images students are distilled on): its accuracy there, the spread of the
non-target logits relative to the margin of the top one (0: all non-target
classes equal, what label smoothing trains towards), the probability mass
off the top class at temperature 4, and the entropy of the non-target
distribution at temperature 4 over log 9 (1: uniform, no dark knowledge).
"""

import json
import os

import keras
import numpy as np

import keras_vid  # noqa: F401  (registers the layers the teachers use)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def non_target_statistics(logits, temperature=4.0):
    logits = np.asarray(logits, "float64")
    top = logits.argmax(-1)
    others = np.ones_like(logits, bool)
    others[np.arange(len(logits)), top] = False
    rest = logits[others].reshape(len(logits), -1)
    spread = rest.std(-1) / (logits.max(-1) - rest.mean(-1))
    p = np.exp((logits - logits.max(-1, keepdims=True)) / temperature)
    p /= p.sum(-1, keepdims=True)
    q = p[others].reshape(len(logits), -1)
    q /= q.sum(-1, keepdims=True)
    entropy = -(q * np.log(q)).sum(-1) / np.log(q.shape[-1])
    return (
        top,
        float(np.median(spread)),
        float(np.median(1 - p.max(-1))),
        float(np.median(entropy)),
    )


def main():
    with np.load(os.path.join(ROOT, "..", "shared", "data", "cifar10_train.npz")) as data:
        index = np.random.default_rng(0).permutation(len(data["y"]))[:2000]
        x, y = data["x"][index].astype("float32"), data["y"][index]
    with open(os.path.join(ROOT, "results", "teachers.json")) as f:
        entries = json.load(f)
    print("| teacher | train accuracy | non-target spread / margin | mass off the top (T 4) | "
          "non-target entropy (T 4, 1 = uniform) |")  # fmt: skip
    print("|---|---|---|---|---|")
    for entry in entries:
        model = keras.saving.load_model(os.path.join(ROOT, entry["path"]), compile=False)
        logits = model.predict(x, batch_size=500, verbose=0)
        top, spread, mass, entropy = non_target_statistics(logits)
        print(f"| {entry['name']} | {100 * np.mean(top == y):.1f} | {spread:.3f} | "
              f"{mass:.3f} | {entropy:.3f} |")  # fmt: skip


if __name__ == "__main__":
    main()
