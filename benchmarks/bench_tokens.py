"""What masking padded tokens costs: one training step of a masked token pair
against the same pair unmasked, on every backend.

Two `VIDDistiller`s share one teacher and one student (transformer-shaped
token models on `{"token_ids", "padding_mask"}` inputs, two token pairs
and KD): `masked` uses the `padding_mask` input (`token_mask="auto"`),
`unmasked` ignores it (`token_mask=None`). Both are warmed up (compilation
excluded), then timed in rounds: within a round single `train_on_batch`
steps alternate between the two, in an order that flips every round, and
the ratio masked / unmasked is formed within the round; the report is the
median over rounds, so load from other processes hits both alike.

One process per backend (`--backend`); without it the script runs the three
backends one after another, each in its own process, and writes the table.

Usage:
    python benchmarks/bench_tokens.py                       # all backends, table
    python benchmarks/bench_tokens.py --backend jax --json out.json
    python benchmarks/bench_tokens.py --smoke               # CI: tiny, 2 rounds
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

BACKENDS = ("tensorflow", "jax", "torch")
RESULT_TAG = "BENCH_TOKENS "
CONFIGS = {
    # batch, tokens, vocabulary, (teacher dim, blocks), (student dim, blocks)
    "default": dict(batch=32, tokens=128, vocab=1000, teacher=(256, 4), student=(128, 2)),
    "smoke": dict(batch=4, tokens=8, vocab=50, teacher=(16, 2), student=(8, 1)),
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=BACKENDS)
    parser.add_argument("--repeats", type=int, default=9, help="timed rounds")
    parser.add_argument("--steps", type=int, default=10, help="steps per contender per round")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--smoke", action="store_true", help="tiny models, 2 rounds of 2 steps")
    parser.add_argument("--json", help="write the result here")
    parser.add_argument("--table", help="(all backends) write the markdown table here")
    args = parser.parse_args(argv)
    if args.smoke:
        args.repeats, args.steps, args.warmup = 2, 2, 1
    return args


def token_model(keras, name, dim, blocks, config):
    """Embedding, then `blocks` residual MLP blocks on (batch, tokens, dim)
    whose output is zeroed at padded tokens, then mean-pooled logits."""
    ops = keras.ops
    ids = keras.Input((config["tokens"],), dtype="int32", name="token_ids")
    mask = keras.Input((config["tokens"],), dtype="int32", name="padding_mask")
    keep = ops.expand_dims(ops.cast(mask, "float32"), -1)
    x = keras.layers.Embedding(config["vocab"], dim, name=f"{name}_embedding")(ids)
    for i in range(blocks):
        h = keras.layers.LayerNormalization(name=f"{name}_norm{i}")(x)
        h = keras.layers.Dense(2 * dim, activation="gelu", name=f"{name}_up{i}")(h)
        h = keras.layers.Dense(dim, name=f"{name}_down{i}")(h)
        x = keras.layers.Add(name=f"{name}_block{i}")([x, h]) * keep
    pooled = keras.layers.GlobalAveragePooling1D(name=f"{name}_pool")(x)
    logits = keras.layers.Dense(2, name=f"{name}_logits")(pooled)
    return keras.Model({"token_ids": ids, "padding_mask": mask}, logits, name=name)


def batches(config, count=4):
    import numpy as np

    rng = np.random.default_rng(0)
    out = []
    for _ in range(count):
        lengths = rng.integers(1, config["tokens"] + 1, size=config["batch"])
        mask = np.arange(config["tokens"])[None, :] < lengths[:, None]
        ids = np.where(mask, rng.integers(1, config["vocab"], size=mask.shape), 0)
        x = {"token_ids": ids.astype("int32"), "padding_mask": mask.astype("int32")}
        out.append((x, rng.integers(0, 2, size=config["batch"])))
    return out


def run_backend(args):
    import keras

    from keras_vid import VIDDistiller

    config = CONFIGS["smoke" if args.smoke else "default"]
    keras.utils.set_random_seed(0)
    teacher = token_model(keras, "t", *config["teacher"], config)
    student = token_model(keras, "s", *config["student"], config)
    t_blocks, s_blocks = config["teacher"][1], config["student"][1]
    pairs = [
        (f"s_block{m}", f"t_block{(m + 1) * t_blocks // s_blocks - 1}") for m in range(s_blocks)
    ]
    steps = {}
    for name, token_mask in (("masked", "auto"), ("unmasked", None)):
        distiller = VIDDistiller(teacher, student, pairs=pairs, token_mask=token_mask)
        expected = "input" if token_mask else None
        assert set(distiller._mask_sources.values()) <= {expected, None}, distiller._mask_sources
        distiller.compile(optimizer="adam", loss="sparse_categorical_crossentropy", kd_weight=1.0)
        steps[name] = distiller
    data = batches(config)
    for name, distiller in steps.items():
        print(f"warming up {name}", file=sys.stderr, flush=True)
        for i in range(args.warmup):
            distiller.train_on_batch(*data[i % len(data)])
    times = {name: [] for name in steps}
    ratios = []
    for r in range(args.repeats):
        order = list(steps) if r % 2 == 0 else list(steps)[::-1]
        this_round = dict.fromkeys(order, 0.0)
        for i in range(args.steps):
            for name in order:
                start = time.perf_counter()
                steps[name].train_on_batch(*data[i % len(data)])
                this_round[name] += (time.perf_counter() - start) / args.steps
        for name, value in this_round.items():
            times[name].append(value)
        ratios.append(this_round["masked"] / this_round["unmasked"])
        print(
            f"{keras.backend.backend()} round {r + 1}/{args.repeats}: "
            + ", ".join(f"{n}={1000 * t:.1f}ms" for n, t in this_round.items())
            + f", ratio {ratios[-1]:.3f}",
            file=sys.stderr,
            flush=True,
        )
    return {
        "backend": keras.backend.backend(),
        "keras": keras.__version__,
        "config": config,
        "pairs": pairs,
        "repeats": args.repeats,
        "steps_per_round": args.steps,
        "step_ms": {n: 1000 * statistics.median(v) for n, v in times.items()},
        "ratio_median": statistics.median(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
    }


def machine():
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        pass
    return f"{model}, {os.cpu_count()} cores, {platform.system()}"


def table(results):
    lines = [
        "| backend | unmasked step | masked step | masked / unmasked (median) | min–max "
        "| ≤ 1.05? |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        ms = r["step_ms"]
        lines.append(
            f"| {r['backend']} | {ms['unmasked']:.1f} ms | {ms['masked']:.1f} ms "
            f"| {r['ratio_median']:.3f} | {r['ratio_min']:.3f}–{r['ratio_max']:.3f} "
            f"| {'yes' if r['ratio_median'] <= 1.05 else 'no'} |"
        )
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    if args.backend:
        os.environ["KERAS_BACKEND"] = args.backend
        result = run_backend(args)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(result, f, indent=1)
        print(RESULT_TAG + json.dumps(result), flush=True)
        return [result]
    results = []
    for backend in BACKENDS:
        command = [sys.executable, __file__, "--backend", backend]
        command += ["--repeats", str(args.repeats), "--steps", str(args.steps)]
        command += ["--warmup", str(args.warmup)] + (["--smoke"] if args.smoke else [])
        env = dict(os.environ, KERAS_BACKEND=backend)
        out = subprocess.run(command, env=env, stdout=subprocess.PIPE, text=True, check=True)
        line = next(x for x in out.stdout.splitlines() if x.startswith(RESULT_TAG))
        results.append(json.loads(line[len(RESULT_TAG) :]))
    text = f"Machine: {machine()}\n\n{table(results)}\n"
    print(text)
    if args.table:
        with open(args.table, "w") as f:
            f.write(text)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return results


if __name__ == "__main__":
    main()
