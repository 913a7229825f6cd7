"""Compare experiment runs side by side: `python -m keras_vid.experiments.compare`.

Reads the `results.json` of several output directories (one per setting,
e.g. the rows of an ablation) and writes one Markdown table: per setting
and method, the accuracy per seed and its mean ± std, on the split the runs
were scored on. Usage:

    python -m keras_vid.experiments.compare "floor 1=results/a" "floor 1e-5=results/b" \\
        --output ablation.md
"""

import argparse
import json
import os

import numpy as np

from keras_vid.experiments.report import run_accuracy, scored_split


def load_rows(specs):
    """`[(label, runs)]` from `label=directory` strings."""
    rows = []
    for spec in specs:
        label, sep, directory = spec.partition("=")
        if not sep:
            label, directory = os.path.basename(os.path.normpath(spec)), spec
        with open(os.path.join(directory, "results.json")) as file:
            rows.append((label, json.load(file)["runs"]))
    return rows


def comparison_table(rows, title=None):
    """A Markdown table with one line per (setting, method, images per class)."""
    lines = [f"### {title}", ""] if title else []
    lines += [
        "| setting | method | per class | accuracy (mean ± std) | seeds | per seed |",
        "|---|---|---|---|---|---|",
    ]
    splits = set()
    for label, runs in rows:
        splits.add(scored_split(runs))
        groups = {}
        for run in runs:
            groups.setdefault((run["method"], run["per_class"]), []).append(run)
        for (method, per_class), group in groups.items():
            group = sorted(group, key=lambda r: r["seed"])
            values = [run_accuracy(r) for r in group]
            per_seed = ", ".join(f"{r['seed']}: {run_accuracy(r):.2f}" for r in group)
            lines.append(
                f"| {label} | {method} | {per_class} | {np.mean(values):.2f} ± "
                f"{np.std(values):.2f} | {len(values)} | {per_seed} |"
            )
    split = splits.pop() if len(splits) == 1 else "mixed"
    lines += ["", f"Accuracy (%) on the {split} split."]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m keras_vid.experiments.compare")
    parser.add_argument("rows", nargs="+", help="label=output_dir (or just output_dir)")
    parser.add_argument("--output", default=None, help="write the table here too.")
    parser.add_argument("--title", default=None)
    args = parser.parse_args(argv)
    table = comparison_table(load_rows(args.rows), args.title)
    print(table)
    if args.output:
        with open(args.output, "w") as file:
            file.write(table)
    return table


if __name__ == "__main__":
    main()
