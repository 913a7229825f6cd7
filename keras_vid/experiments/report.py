"""Writing results: JSON (every run), a Markdown table and a PNG plot (mean ± std over seeds)."""

import json
import os
import textwrap

import numpy as np


def run_accuracy(run):
    """A run's accuracy on the split it was scored on (older records: `test_accuracy`)."""
    return run["accuracy"] if "accuracy" in run else run["test_accuracy"]


def scored_split(runs):
    """`"validation"`, `"test"`, or `"mixed"` for the runs' scored split."""
    splits = {run.get("scored_on", "test") for run in runs}
    return splits.pop() if len(splits) == 1 else "mixed"


def summarize(runs):
    """`{method: {per_class: (mean, std, n)}}` of accuracy over seeds."""
    grouped = {}
    for run in runs:
        grouped.setdefault(run["method"], {}).setdefault(run["per_class"], []).append(
            run_accuracy(run)
        )
    return {
        method: {
            per_class: (float(np.mean(v)), float(np.std(v)), len(v))
            for per_class, v in sorted(by_size.items(), key=lambda item: _size_key(item[0]))
        }
        for method, by_size in grouped.items()
    }


def _size_key(per_class):
    return float("inf") if per_class is None else per_class


def _label(per_class):
    return "all" if per_class is None else str(per_class)


def write_json(path, payload):
    with open(path, "w") as file:
        json.dump(payload, file, indent=1)


def markdown_table(runs, methods, teacher=None, title=None):
    """A table: one row per method, one column per images-per-class size."""
    summary = summarize(runs)
    sizes = sorted({run["per_class"] for run in runs}, key=_size_key, reverse=True)
    lines = []
    if title:
        lines += [f"### {title}", ""]
    if teacher:
        trained = (
            f"trained on {teacher['train_images']} images, {teacher['epochs']} epochs"
            if "train_images" in teacher
            else teacher.get("train_accuracy_note", "loaded")
        )
        lines += [
            f"Teacher `{teacher['arch']}`: {teacher['test_accuracy']:.2f} % test accuracy "
            f"({trained}).",
            "",
        ]
    lines.append("| method | " + " | ".join(f"{_label(s)} / class" for s in sizes) + " |")
    lines.append("|---|" + "---|" * len(sizes))
    best = {
        s: max((summary[m][s][0] for m in methods if s in summary.get(m, {})), default=None)
        for s in sizes
    }
    for method in methods:
        if method not in summary:
            continue
        cells = []
        for s in sizes:
            if s not in summary[method]:
                cells.append("–")
                continue
            mean, std, n = summary[method][s]
            cell = f"{mean:.2f} ± {std:.2f}"
            cells.append(f"**{cell}**" if mean == best[s] else cell)
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    seeds = sorted({run["seed"] for run in runs})
    split = scored_split(runs)
    lines += [
        "",
        f"{split.capitalize()} accuracy (%), mean ± std over {len(seeds)} seed(s) {seeds}; "
        "best per column in bold.",
    ]
    return "\n".join(lines) + "\n"


def _teacher_line(axis, teacher):
    axis.axhline(
        teacher["test_accuracy"],
        color="gray",
        linestyle="--",
        label=f"teacher ({teacher['test_accuracy']:.1f} %)",
    )


def plot_seeds(path, runs, methods, teacher=None, title=None):
    """One size only: every seed's accuracy per method (dots) and the mean (a bar)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = [m for m in methods if any(r["method"] == m for r in runs)]
    figure, axis = plt.subplots(figsize=(7.6, 4.4))
    for index, method in enumerate(methods):
        values = [run_accuracy(r) for r in runs if r["method"] == method]
        axis.bar(index, np.mean(values), width=0.6, alpha=0.35)
        axis.scatter([index] * len(values), values, color="black", s=14, zorder=3)
        axis.text(index, max(values) + 0.8, f"{np.mean(values):.1f}", ha="center")
    if teacher:
        _teacher_line(axis, teacher)
        axis.legend(loc="lower right", fontsize="small")
    low = min(run_accuracy(r) for r in runs if r["method"] in methods)
    axis.set_ylim(max(0.0, low - 10.0), None)
    axis.set_xticks(range(len(methods)), methods)
    size = _label(runs[0]["per_class"])
    axis.set_ylabel(f"{scored_split(runs)} accuracy (%), {size} images / class")
    if title:
        axis.set_title(textwrap.fill(title, 70), fontsize="medium")
    axis.grid(True, axis="y", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_accuracy(path, runs, methods, teacher=None, title=None):
    """Accuracy against images per class (log scale), one line per method; with a
    single size, every seed per method instead (`plot_seeds`)."""
    if len({run["per_class"] for run in runs}) == 1:
        return plot_seeds(path, runs, methods, teacher, title)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = summarize(runs)
    figure, axis = plt.subplots(figsize=(7.6, 4.4))
    for method in methods:
        if method not in summary:
            continue
        sizes = [s for s in summary[method] if s is not None]
        if not sizes:
            continue
        means = [summary[method][s][0] for s in sizes]
        stds = [summary[method][s][1] for s in sizes]
        axis.errorbar(sizes, means, yerr=stds, marker="o", capsize=3, label=method)
    if teacher:
        _teacher_line(axis, teacher)
    axis.set_xscale("log")
    axis.set_xlabel("training images per class")
    axis.set_ylabel(f"{scored_split(runs)} accuracy (%)")
    if title:
        axis.set_title(textwrap.fill(title, 70), fontsize="medium")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def write_outputs(output_dir, payload, methods, title=None):
    """Write `results.json`, `results.md` and `accuracy.png` into `output_dir`."""
    os.makedirs(output_dir, exist_ok=True)
    runs, teacher = payload["runs"], payload.get("teacher")
    write_json(os.path.join(output_dir, "results.json"), payload)
    table = markdown_table(runs, methods, teacher, title)
    with open(os.path.join(output_dir, "results.md"), "w") as file:
        file.write(table)
    if runs:
        plot_accuracy(os.path.join(output_dir, "accuracy.png"), runs, methods, teacher, title)
    return table
