"""Test accuracy per seed of every configuration scored on the test split.

python results/cifar10/plot_test.py   # writes test/accuracy.png and prints the table
"""

import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "test")

# (label, method, directory under test/ holding s0, s1, s2; None: the merged round-1 grid)
ROWS = [
    ("student", "student", None),
    ("KD (T 4, weight 1)", "kd", None),
    ("AT (β 1000, not tuned)", "at", None),
    ("FitNet λ 1 (round 1)", "fitnet", None),
    ("FitNet λ 100", "fitnet", "fitnet-weight-100"),
    ("VID-I λ 1, σ² ≥ 0.001 (round 1)", "vid-i", None),
    ("VID-I λ 10, σ² ≥ 0.001", "vid-i", "vid-i-weight-10"),
    ("VID-I λ 10, σ² ≥ 0.01 (the new defaults)", "vid-i", "vid-i-weight-10-floor-0-01"),
    ("FitNet λ 30, pre-activation pairs", "fitnet", "fitnet-pre-activation-weight-30"),
    (
        "VID-I λ 10, σ² ≥ 0.1, pre-activation pairs",
        "vid-i",
        "vid-i-pre-activation-weight-10-floor-0-1",
    ),
]


def seeds(method, directory):
    if directory is None:
        with open(os.path.join(HERE, "results.json")) as file:
            runs = json.load(file)["runs"]
        return {r["seed"]: r["accuracy"] for r in runs if r["method"] == method}
    out = {}
    for seed in sorted(os.listdir(os.path.join(HERE, directory))):
        with open(os.path.join(HERE, directory, seed, "results.json")) as file:
            run = json.load(file)["runs"][0]
        out[run["seed"]] = run["accuracy"]
    return out


def main():
    table = [(label, seeds(method, directory)) for label, method, directory in ROWS]
    student = table[0][1]
    print("| method | seed 0 | seed 1 | seed 2 | test accuracy, mean ± std | − student |")
    print("|---|---|---|---|---|---|")
    for label, values in table:
        acc = [values.get(s) for s in (0, 1, 2)]
        mean, std = np.mean(list(values.values())), np.std(list(values.values()))
        gain = np.mean([values[s] - student[s] for s in values])
        cells = " | ".join("not run" if a is None else f"{a:.2f}" for a in acc)
        print(f"| {label} | {cells} | {mean:.2f} ± {std:.2f} | {gain:+.2f} |")
    fig, ax = plt.subplots(figsize=(7.5, 4))
    for row, (_, values) in enumerate(table):
        ax.scatter(list(values.values()), [row] * len(values), color="C0", s=18)
        ax.plot([np.mean(list(values.values()))] * 2, [row - 0.3, row + 0.3], color="C3")
    ax.set_yticks(range(len(table)), [label for label, _ in table], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("test accuracy (%)  (dots: seeds 0-2; bar: mean)")
    ax.set_title("CIFAR-10, 100 images/class, 1 600 steps, teacher 80.6 %", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(os.path.join(HERE, "accuracy.png"), dpi=120)


if __name__ == "__main__":
    main()
