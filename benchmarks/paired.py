"""Is one suite method's loss to another, in one seed, more than chance?

    python benchmarks/paired.py --task digits-10 --methods student,vid --seeds 0,1,2

A seed's accuracy gap between two methods on a few hundred images can be a
handful of images. This retrains both methods of `benchmarks/accuracy.py`
for each seed (training is deterministic: the same seed gives the same
student, and the accuracy the suite recorded is printed beside the one
measured here) and compares them on the same evaluation images with an
exact McNemar test: of the images exactly one of the two gets right, how
many each gets, and the two-sided probability of a split at least that
uneven if either were equally likely to be the one. KD runs use the
temperature, and AT runs the β, the suite chose for the task (read from
its `results.json`).
"""

import argparse
import json
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import accuracy as suite  # noqa: E402  (benchmarks/accuracy.py)


def mcnemar(a_right, b_right):
    """`(only_a, only_b, p)`: the images only `a` gets right, only `b` does,
    and the exact two-sided binomial p-value of that split (1 when none)."""
    a_right, b_right = np.asarray(a_right, bool), np.asarray(b_right, bool)
    only_a, only_b = int(np.sum(a_right & ~b_right)), int(np.sum(~a_right & b_right))
    n = only_a + only_b
    # Integers throughout: 2.0**n overflows a float beyond n = 1 023 discordant images.
    tail = sum(math.comb(n, k) for k in range(min(only_a, only_b) + 1)) / 2**n
    return only_a, only_b, min(1.0, 2.0 * tail)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", required=True, help=f"from {','.join(suite.TASKS)}")
    p.add_argument("--methods", default="student,vid", help="the two methods, a,b")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--split", choices=("test", "validation"), default="test")
    p.add_argument("--results", default=os.path.join(suite.ROOT, "benchmarks", "accuracy"))
    p.add_argument("--cache-dir", default=os.path.join(suite.ROOT, "runs", "accuracy-teachers"))
    p.add_argument("--quick", action="store_true", help="4 steps per run (smoke run)")
    args = p.parse_args(argv)
    methods = args.methods.split(",")
    known = suite.METHODS + suite.COMBINED_METHODS
    if len(methods) != 2 or not set(methods) <= set(known):
        p.error(f"--methods takes two of {known}. Received: {args.methods!r}")
    if args.task not in suite.TASKS:
        p.error(f"unknown task {args.task!r}; choose from {','.join(suite.TASKS)}")
    with open(os.path.join(args.results, "results.json")) as f:
        entry = next((t for t in json.load(f)["tasks"] if t["name"] == args.task), None)
    if entry is None:
        p.error(f"{args.task} is not in {args.results}/results.json: run the suite on it first")
    task = suite.TASKS[args.task]
    data = suite.load(task, args.quick)
    teacher = task.teacher(data, args.cache_dir, args.quick)
    settings = suite.vid_settings()
    steps = 4 if args.quick else task.steps
    key = f"{args.split}_accuracy"
    recorded = {(r["method"], r["seed"]): r.get(key) for r in entry["runs"]}
    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        runs = {
            m: suite.train_run(
                task,
                data,
                teacher,
                m,
                seed,
                entry.get("kd_temperature"),
                settings,
                args.split,
                steps,
                entry.get("at_weight"),
            )  # fmt: skip
            for m in methods
        }
        only = mcnemar(runs[methods[0]]["correct"], runs[methods[1]]["correct"])
        rows.append({"seed": seed, "only": only[:2], "p": only[2], "runs": runs})
        cells = []
        for m in methods:
            was = recorded.get((m, seed))
            cells.append(
                f"{m} {runs[m]['accuracy']:.2f}"
                + ("" if was is None else f" (recorded {was:.2f})")
            )
        print(
            f"{args.task} seed {seed}, {args.split} ({len(runs[methods[0]]['correct'])} images): "
            + ", ".join(cells)
            + f"; right only with {methods[0]} {only[0]}, only with {methods[1]} {only[1]}, "
            f"McNemar p = {only[2]:.3g}",
            flush=True,
        )
    return rows


if __name__ == "__main__":
    main()
