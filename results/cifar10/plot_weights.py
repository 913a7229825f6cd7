"""Validation accuracy against the feature-loss weight λ (rounds 2 and 3).

python results/cifar10/plot_weights.py   # writes validation/weights_1600.png
"""

import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
RUNS = os.path.join(HERE, "validation", "ablation")


def accuracies(name):
    """Validation accuracy of every seed of one run directory (NaN for a diverged run)."""
    values = []
    directory = os.path.join(RUNS, name)
    for seed in sorted(os.listdir(directory)):
        with open(os.path.join(directory, seed, "results.json")) as file:
            run = json.load(file)["runs"][0]
        values.append(run["accuracy"] if np.isfinite(run["final_train_loss"]) else np.nan)
    return values


def reference(name):
    path = os.path.join(HERE, "validation", "val", name)
    values = []
    for seed in sorted(os.listdir(path)):
        with open(os.path.join(path, seed, "results.json")) as file:
            values.append(json.load(file)["runs"][0]["accuracy"])
    return np.mean(values)


CURVES = {
    "FitNet (σ² = 1 fixed)": {10: "fitnet-weight-10", 30: "fitnet-weight-30",
                              100: "fitnet-weight-100", 1000: "fitnet-weight-1000"},
    "VID-I, σ² ≥ 0.001": {1: "chosen", 3: "vid-weight-3", 10: "vid-weight-10",
                          30: "vid-weight-30"},
    "VID-I, σ² ≥ 0.01": {1: "vid-weight-1-floor-0-01", 3: "vid-weight-3-floor-0-01",
                         10: "vid-weight-10-floor-0-01"},
}  # fmt: skip


def main():
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for (label, runs), marker in zip(CURVES.items(), "osD"):
        weights = sorted(runs)
        per_seed = [accuracies(runs[w]) for w in weights]
        means = [np.nanmean(v) if not np.all(np.isnan(v)) else np.nan for v in per_seed]
        line = ax.plot(weights, means, marker=marker, label=label)[0]
        for w, values in zip(weights, per_seed):
            ax.scatter([w] * len(values), values, color=line.get_color(), s=10, alpha=0.5)
            if np.all(np.isnan(values)):
                ax.annotate("diverged", (w, 47), color=line.get_color(), ha="center", fontsize=8)
    ax.axhline(reference("student"), color="gray", ls="--", label="student alone")
    kd = accuracies("kd")[0]
    ax.axhline(kd, color="black", ls=":", label="KD (T = 4, weight 1)")
    ax.set_xscale("log")
    ax.set_xlim(0.7, 1500)
    ax.set_xlabel("feature-loss weight λ per pair (mean reduction)")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_ylim(46, 61)
    ax.set_title("CIFAR-10, 100 images/class, 1 600 steps (line: mean; dots: seeds)")
    ax.legend(fontsize=8, loc="center right")
    fig.tight_layout()
    out = os.path.join(HERE, "validation", "weights_1600.png")
    fig.savefig(out, dpi=120)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
