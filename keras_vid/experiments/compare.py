"""Compare experiment runs side by side: `python -m keras_vid.experiments.compare`.

Reads the `results.json` of several output directories (one per setting,
e.g. the rows of an ablation) and writes one Markdown table: per setting
and method, the accuracy per seed and its mean ± std, on the split the runs
were scored on. Usage:

    python -m keras_vid.experiments.compare "floor 1=results/a" "floor 1e-5=results/b" \\
        --output ablation.md

With `--merge-into DIR` it instead merges directories made with the same
settings (e.g. one per seed, run in parallel) into one result set.
"""

import argparse
import json
import os

import numpy as np

from keras_vid.experiments.report import run_accuracy, scored_split, write_outputs


def load_payloads(directories):
    """The `results.json` payloads of `directories`."""
    payloads = []
    for directory in directories:
        with open(os.path.join(directory, "results.json")) as file:
            payloads.append(json.load(file))
    return payloads


def load_rows(specs):
    """`[(label, runs)]` from `label=dir[,dir...]` strings (the runs of all the
    directories of one label together, e.g. one directory per seed)."""
    rows = []
    for spec in specs:
        label, sep, directories = spec.partition("=")
        if not sep:
            label, directories = os.path.basename(os.path.normpath(spec)), spec
        payloads = load_payloads(directories.split(","))
        rows.append((label, [run for payload in payloads for run in payload["runs"]]))
    return rows


def merge(directories, output_dir, methods=None, title=None):
    """Write the runs of several output directories made with the same data,
    models and training (e.g. one per seed or per method, run in parallel) as
    one result set: `results.json`, `results.md` and `accuracy.png` in
    `output_dir`. The method settings may differ (each method with its own
    validated flags); every command is kept."""
    payloads = load_payloads(directories)

    def settings(payload):
        config = dict(payload["config"])
        config.pop("command", None)
        config.pop("methods", None)
        return json.dumps(config, sort_keys=True)

    if len({settings(p) for p in payloads}) > 1:
        raise ValueError(f"The runs in {directories} were made with different settings.")
    runs = [run for payload in payloads for run in payload["runs"]]
    if methods is None:
        methods = list(dict.fromkeys(run["method"] for run in runs))
    payload = {
        "config": payloads[0]["config"],
        "commands": [p["config"].get("command") for p in payloads],
        "method_settings": {
            run["method"]: p["config"].get("methods") for p in payloads for run in p["runs"]
        },
        "teacher": payloads[0].get("teacher"),
        "runs": runs,
        "elapsed_s": round(sum(p.get("elapsed_s", 0.0) for p in payloads), 1),
    }
    return write_outputs(output_dir, payload, methods, title)


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
    parser = argparse.ArgumentParser(
        prog="python -m keras_vid.experiments.compare",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("rows", nargs="+", help="label=output_dir[,output_dir...]")
    parser.add_argument("--output", default=None, help="write the table here too.")
    parser.add_argument("--title", default=None)
    parser.add_argument(
        "--merge-into",
        default=None,
        help="instead of a comparison, merge the directories' runs (same settings) into "
        "one result set in this directory.",
    )
    parser.add_argument("--methods", default=None, help="method order for --merge-into.")
    args = parser.parse_args(argv)
    if args.merge_into:
        methods = args.methods.split(",") if args.methods else None
        directories = [d for spec in args.rows for d in spec.split("=")[-1].split(",")]
        table = merge(directories, args.merge_into, methods, args.title)
        print(table)
        return table
    table = comparison_table(load_rows(args.rows), args.title)
    print(table)
    if args.output:
        with open(args.output, "w") as file:
            file.write(table)
    return table


if __name__ == "__main__":
    main()
