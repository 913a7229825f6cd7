"""Each method's gain over the student, per CIFAR-10 teacher, from the accuracy suite.

    python results/teachers/plot_gains.py

Reads `benchmarks/accuracy/results.json` (test split) and, for each student
of the suite's CIFAR-10 tasks (the CNN 8-16-32-64 and the paper's WRN-16-1,
one task per teacher), prints the mean gain of each method over the student
and the differences the strong-teacher question asks about, and draws
`results/teachers/gains.png`: one panel per student, one group of bars per
method, one bar per teacher, the seeds as dots. A student's runs are the
same for every teacher (same images, same initial weights per seed), so the
gains differ only by the teacher. Tasks not yet run are left out.
"""

import json
import os

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STUDENTS = {
    "CNN 8-16-32-64": {
        "cifar10-cnn80-100": "80.6 % CNN teacher",
        "cifar10-airbench-100": "89.7 % airbench teacher (label smoothing 0.2)",
        "cifar10-airbench-ls0-100": "89.8 % airbench teacher (no label smoothing)",
    },
    "WRN-16-1": {
        "cifar10-wrn-cnn80-100": "80.6 % CNN teacher",
        "cifar10-wrn-airbench-ls0-100": "89.8 % airbench teacher (no label smoothing)",
    },
}
METHODS = ("kd", "fitnet", "at", "vid", "kd+vid")


def gains(task):
    """{method: [score − student's score, per common seed]}."""
    by = {}
    for run in task["runs"]:
        by.setdefault(run["method"], {})[run["seed"]] = run["test_accuracy"]
    student = by.get("student", {})
    return {
        m: [by[m][s] - student[s] for s in sorted(by[m]) if s in student]
        for m in METHODS
        if m in by
    }


def main():
    with open(os.path.join(ROOT, "benchmarks", "accuracy", "results.json")) as f:
        results = {t["name"]: t for t in json.load(f)["tasks"]}
    panels = {}
    for student, names in STUDENTS.items():
        tasks = {n: results[n] for n in names if n in results}
        if not tasks:
            continue
        table = panels[student] = {name: gains(task) for name, task in tasks.items()}
        print(f"\n{student} student, gain over the student (points, seeds):\n")
        print("| teacher | " + " | ".join(METHODS) + " | KD + VID − KD | VID − FitNet |")
        print("|---|" + "---|" * (len(METHODS) + 2))
        for name, g in table.items():
            mean = {m: np.mean(v) for m, v in g.items() if v}
            cells = [f"{mean[m]:+.2f} ({len(g[m])})" if m in mean else "–" for m in METHODS]
            extra = [
                f"{mean[a] - mean[b]:+.2f}" if a in mean and b in mean else "–"
                for a, b in (("kd+vid", "kd"), ("vid", "fitnet"))
            ]
            label = f"{names[name]}, {tasks[name]['teacher_test_accuracy']:.2f} %"
            print(f"| {label} | " + " | ".join(cells + extra) + " |")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        1, len(panels), figsize=(7.5 * len(panels), 3.8), squeeze=False, sharey=True
    )
    for ax, (student, table) in zip(axes[0], panels.items()):
        width = 0.8 / max(len(table), 1)
        for k, (name, g) in enumerate(table.items()):
            label = STUDENTS[student][name]  # on the teacher's first bar
            for m, method in enumerate(METHODS):
                values = g.get(method, [])
                if not values:
                    continue
                x = m + (k - (len(table) - 1) / 2) * width
                ax.bar(x, np.mean(values), width * 0.9, color=f"C{k}", alpha=0.6, label=label)
                label = None
                ax.scatter([x] * len(values), values, s=10, color=f"C{k}", zorder=3)
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xticks(range(len(METHODS)), METHODS)
        ax.set_ylabel("test accuracy − student (points)")
        ax.set_title(f"CIFAR-10, 100 images/class, {student} student: gain per teacher")
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = os.path.join(ROOT, "results", "teachers", "gains.png")
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
