"""Run `bench_step.py` once per backend (one process each) and tabulate the results.

Usage:
    python benchmarks/run_all.py --config small --measure-memory
    python benchmarks/run_all.py --config wrn --measure-memory
    python benchmarks/run_all.py --config wrn --gpu --measure-memory
    python benchmarks/run_all.py --render     # tables from the saved JSON only

Results go to `benchmarks/results/<config>[-gpu]-<backend>.json`; the tables
(Markdown, as pasted into BENCHMARKS.md) are printed and, with `--write`,
saved to a file.
"""

import argparse
import glob
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
BACKENDS = ("tensorflow", "jax", "torch")


def run(backend, args):
    tag = args.config + ("-gpu" if args.gpu else "")
    if args.jit != "auto":
        tag += f"-jit_{args.jit}"
    out = os.path.join(RESULTS, f"{tag}-{backend}.json")
    command = [sys.executable, os.path.join(HERE, "bench_step.py"), "--backend", backend]
    command += ["--config", args.config, "--json", out, "--jit", args.jit]
    if args.gpu:
        command.append("--gpu")
    if args.measure_memory:
        command.append("--measure-memory")
    if args.repeats:
        command += ["--repeats", str(args.repeats)]
    if args.memory_steps:
        command += ["--memory-steps", str(args.memory_steps)]
    print("$ KERAS_BACKEND=" + backend + " " + " ".join(command[1:]), flush=True)
    subprocess.run(command, env=dict(os.environ, KERAS_BACKEND=backend), check=True)


def _fmt(value, digits=2):
    return "—" if value is None else f"{value:.{digits}f}"


def render(paths):
    """Markdown tables: step times, ratios (median [min–max] over rounds), memory."""
    results = []
    for path in paths:
        with open(path) as f:
            result = json.load(f)
        # File name: <config>[-gpu][-jit_on|-jit_off]-<backend>.json
        result["tag"] = os.path.basename(path)[: -len(f"-{result['backend']}.json")]
        results.append(result)
    lines = []
    for tag in sorted({r["tag"] for r in results}):
        group = [r for r in results if r["tag"] == tag]
        group.sort(key=lambda r: BACKENDS.index(r["backend"]))
        config = (group[0]["config"], group[0]["gpu"])
        title = tag + (" (GPU, mixed_bfloat16)" if config[1] else "")
        first = group[0]
        lines.append(
            f"### `{title}`: teacher WRN-{first['models']['teacher'][0]}-"
            f"{first['models']['teacher'][1]}, student WRN-{first['models']['student'][0]}-"
            f"{first['models']['student'][1]}, batch {first['batch_size']}\n"
        )
        lines.append("Step time, ms (median over rounds; [min – max]):\n")
        names = []
        for r in group:
            names += [n for n in r["step_ms"] if n not in names]
        lines.append("| contender | " + " | ".join(r["backend"] for r in group) + " |")
        lines.append("|---|" + "---|" * len(group))
        for name in names:
            cells = []
            for r in group:
                if name in r["step_ms"]:
                    low, high = r["step_ms_spread"][name]
                    cells.append(f"{r['step_ms'][name]:.1f} [{low:.0f} – {high:.0f}]")
                else:
                    cells.append("—")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("| *jit_compile* | " + " | ".join(str(r["jit"]) for r in group) + " |")
        lines.append(
            "| *rounds × steps* | "
            + " | ".join(f"{r['repeats']} × {r['steps_per_repeat']}" for r in group)
            + " |\n"
        )
        lines.append("Ratios, paired within each round (median [min – max]):\n")
        labels = []
        for r in group:
            labels += [k for k in r["ratios"] if k not in labels]
        lines.append("| ratio | target | " + " | ".join(r["backend"] for r in group) + " |")
        lines.append("|---|---|" + "---|" * len(group))
        for label in labels:
            target = next(r["ratios"][label]["target"] for r in group if label in r["ratios"])
            cells = []
            for r in group:
                v = r["ratios"].get(label)
                cells.append(
                    "—"
                    if v is None
                    else f"**{v['median']:.2f}** [{v['min']:.2f} – {v['max']:.2f}]"
                )
            lines.append(f"| {label} | {target} | " + " | ".join(cells) + " |")
        lines.append("")
        if any("memory" in r for r in group):
            unit = "device peak, MiB" if config[1] else "peak RSS added after the imports, MiB"
            lines.append(f"Peak memory ({unit}):\n")
            lines.append(
                "Each cell: including the compiling step / steady state after it.\n"
                if any("steady_added_mb" in r.get("memory", {}) for r in group)
                else ""
            )
            lines.append("| contender | " + " | ".join(r["backend"] for r in group) + " |")
            lines.append("|---|" + "---|" * len(group))
            for name in names:
                cells = []
                for r in group:
                    m = r.get("memory")
                    if m is None or name not in m["peak_mb"]:
                        cells.append("—")
                        continue
                    cell = f"{m['added_mb'][name]:.0f}"
                    if name in m.get("steady_added_mb", {}):
                        cell += f" / {m['steady_added_mb'][name]:.0f}"
                    cells.append(cell)
                lines.append(f"| {name} | " + " | ".join(cells) + " |")
            cells = []
            for r in group:
                m = r.get("memory")
                if m is None:
                    cells.append("—")
                    continue
                cell = f"**{_fmt(m['ratio']['value'])}**"
                if "steady_ratio" in m:
                    cell += f" / **{_fmt(m['steady_ratio']['value'])}**"
                cells.append(cell)
            lines.append(
                "| **vid / (student + teacher)** (target ≤ 1.15) | " + " | ".join(cells) + " |"
            )
            lines.append("")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="small")
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--gpu", action="store_true")
    parser.add_argument("--jit", default="auto")
    parser.add_argument("--measure-memory", action="store_true")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--memory-steps", type=int, default=None)
    parser.add_argument("--render", action="store_true", help="only tabulate saved results")
    parser.add_argument("--write", default=None, help="also write the tables to this file")
    args = parser.parse_args()
    os.makedirs(RESULTS, exist_ok=True)
    if not args.render:
        for backend in args.backends.split(","):
            run(backend, args)
    tables = render(sorted(glob.glob(os.path.join(RESULTS, "*.json"))))
    print(tables)
    if args.write:
        with open(args.write, "w") as f:
            f.write(tables + "\n")


if __name__ == "__main__":
    main()
