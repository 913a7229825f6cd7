"""SST-2: a BERT-style teacher distilled into a smaller student (issue 14, item 8).

    KERAS_BACKEND=tensorflow python results/sst2/run_sst2.py --cache-dir /tmp/sst2_cache \\
        > results/sst2/run.log 2>&1

1. Word-level vocabulary from the training split (`examples/distil_transformer.py`:
   the words seen at least twice, most frequent first, after `[PAD]`, `[UNK]`,
   `[CLS]`, `[SEP]`); a sentence is `[CLS] words [SEP]`. 64 positions hold every
   SST-2 sentence (at most 56 words), so nothing is cut.
2. Teacher: `keras_hub.models.BertTextClassifier` from a config (random weights),
   trained from scratch on all 67 349 training phrases (seed 0). Scored once on
   dev and test.
3. Students (fewer, narrower layers), at each labelled-data size and seed:
   `student` (labels alone), `kd` (Hinton KD on the logits), `vid` (token-wise
   VID on TinyBERT-style pairs: embeddings ↔ embeddings, student layer m ↔
   teacher layer m·N/M, μ a pointwise Dense), `kd+vid`. Same recipe for all:
   AdamW, 10 % warm-up then cosine decay, batch 64.
4. Choice on dev (`sst2_dev.tsv`), one seed (`--tune-seed`, not among the final
   seeds), smallest size: KD's temperature among `--tune-temperatures` and the VID
   weight λ among `--tune-vid-weights`; `kd+vid` takes both choices. The test
   split is scored once per final run.

Batches group sentences of similar length (padded to a multiple of 8 tokens),
shuffled within and across groups every epoch: SST-2's phrases average 9 words,
so padding all of them to 64 would cost ~5x the compute.

Writes `results.json` (every run: method, size, seed, dev and test accuracy,
seconds, last-epoch loss terms), `results.md` (mean ± std over seeds and per
seed) and `sst2.png` into `--output-dir`; progress goes to stdout.
"""

import argparse
import json
import math
import os
import platform
import sys
import time

import keras
import numpy as np
import tensorflow as tf

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "examples"))
from distil_transformer import (  # noqa: E402
    CE,
    adamw,
    bert_classifier,
    build_vocabulary,
    load_tsv,
    uniform_pairs,
)

from keras_vid import VIDDistiller  # noqa: E402

METHODS = ("student", "kd", "vid", "kd+vid")
DATA_DIR = os.path.join(HERE, "..", "..", "..", "shared", "data")
SIGNATURE = (
    {
        key: tf.TensorSpec((None, None), tf.int32)
        for key in ("token_ids", "segment_ids", "padding_mask")
    },
    tf.TensorSpec((None,), tf.int32),
)


def log(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def token_ids(sentences, vocabulary, max_length):
    """One int32 array per sentence: `[CLS] words [SEP]`, cut to `max_length`."""
    unk, cls, sep = vocabulary["[UNK]"], vocabulary["[CLS]"], vocabulary["[SEP]"]
    out = []
    for sentence in sentences:
        words = [vocabulary.get(w, unk) for w in sentence.split()][: max_length - 2]
        out.append(np.array([cls, *words, sep], dtype="int32"))
    return out


class Batches:
    """Length-grouped batches of `(x, y)`: sentences are padded to the next
    multiple of `step` tokens; a new order every epoch when `shuffle`."""

    def __init__(self, ids, labels, batch_size, shuffle=False, seed=0, step=8):
        self.ids, self.labels, self.batch_size, self.shuffle = ids, labels, batch_size, shuffle
        self.group = np.array([math.ceil(len(s) / step) * step for s in ids])
        self.rng = np.random.default_rng(seed)

    def __len__(self):
        _, counts = np.unique(self.group, return_counts=True)
        return int(sum(math.ceil(c / self.batch_size) for c in counts))

    def rows(self):
        order = self.rng.permutation(len(self.ids)) if self.shuffle else np.arange(len(self.ids))
        order = order[np.argsort(self.group[order], kind="stable")]
        batches = []
        for length in np.unique(self.group):
            members = order[self.group[order] == length]
            batches += [
                members[i : i + self.batch_size] for i in range(0, len(members), self.batch_size)
            ]
        if self.shuffle:
            self.rng.shuffle(batches)
        return batches

    def __call__(self):
        for rows in self.rows():
            length = self.group[rows].max()
            ids = np.zeros((len(rows), length), dtype="int32")
            for r, row in enumerate(rows):
                ids[r, : len(self.ids[row])] = self.ids[row]
            x = {
                "token_ids": ids,
                "segment_ids": np.zeros_like(ids),
                "padding_mask": (ids != 0).astype("int32"),
            }
            yield x, self.labels[rows]

    def dataset(self):
        dataset = tf.data.Dataset.from_generator(self, output_signature=SIGNATURE)
        return dataset.apply(tf.data.experimental.assert_cardinality(len(self))).prefetch(2)


def accuracy(model, ids, labels):
    """Accuracy of `model`'s logits on every sentence (one pass, in length groups)."""
    batches = Batches(ids, labels, 256)
    order = np.concatenate(batches.rows())
    logits = model.predict(batches.dataset().map(lambda x, y: x), verbose=0)
    predicted = np.argmax(keras.ops.convert_to_numpy(logits), axis=-1)
    return float(np.mean(predicted == labels[order]))


def machine():
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        pass
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": model,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "keras": keras.__version__,
        "backend": keras.backend.backend(),
        "tensorflow": tf.__version__,
        "loadavg_start": os.getloadavg(),
    }


def make_teacher(args, vocabulary_size, train, dev, test):
    config = (args.teacher_layers, args.teacher_hidden, args.teacher_heads, args.teacher_ffn)
    name = "teacher_{}x{}_h{}_ffn{}_e{}_v{}.weights.h5".format(
        *config, args.teacher_epochs, vocabulary_size
    )
    keras.utils.set_random_seed(0)
    teacher = bert_classifier("teacher", vocabulary_size, *config, args.max_length)
    path = os.path.join(args.cache_dir, name) if args.cache_dir else None
    start = time.time()
    if path and os.path.exists(path):
        teacher.load_weights(path)
        log(f"teacher: loaded {path}")
        trained = False
    else:
        batches = Batches(*train, args.batch_size, shuffle=True, seed=0)
        steps = args.teacher_epochs * len(batches)
        teacher.compile(optimizer=adamw(args.teacher_lr, steps), loss=CE, metrics=["accuracy"])
        log(f"teacher: {teacher.count_params():,} parameters, {steps} steps")
        teacher.fit(batches.dataset(), epochs=args.teacher_epochs, shuffle=False, verbose=2)
        trained = True
        if path:
            os.makedirs(args.cache_dir, exist_ok=True)
            teacher.save_weights(path)
    seconds = time.time() - start
    result = {
        "config": dict(zip(["layers", "hidden", "heads", "intermediate"], config)),
        "parameters": teacher.count_params(),
        "epochs": args.teacher_epochs,
        "trained_here": trained,
        "train_seconds": round(seconds, 1),
        "dev_accuracy": accuracy(teacher, *dev),
        "test_accuracy": accuracy(teacher, *test),
    }
    log(f"teacher: dev {result['dev_accuracy']:.4f} test {result['test_accuracy']:.4f}")
    return teacher, result


def pairs_of(args):
    """`--pairs uniform`: embeddings and every student layer (TinyBERT's map);
    `layers`: the transformer layers only; `embeddings`: the embeddings only."""
    pairs = uniform_pairs(
        args.student_layers, args.teacher_layers, embeddings=args.pairs != "layers"
    )
    return pairs[:1] if args.pairs == "embeddings" else pairs


def train_student(args, teacher, method, train, seed, vid_weight, temperature):
    """Train one student; returns it and its last-epoch logs."""
    ids, labels = train
    keras.utils.set_random_seed(seed)
    student = bert_classifier(
        "student",
        teacher.backbone.vocabulary_size,
        args.student_layers,
        args.student_hidden,
        args.student_heads,
        args.student_ffn,
        args.max_length,
    )
    batches = Batches(ids, labels, args.batch_size, shuffle=True, seed=seed)
    epochs = args.epochs_all if len(ids) > args.small_limit else args.epochs_small
    steps = epochs * len(batches)
    optimizer = adamw(args.student_lr, steps)
    if method == "student":
        model = student
        model.compile(optimizer=optimizer, loss=CE, metrics=["accuracy"])
    else:
        kd = "kd" in method.split("+")
        pairs = pairs_of(args) if "vid" in method.split("+") else []
        model = VIDDistiller(teacher, student, pairs=pairs, head_options={"depth": 1})
        model.compile(
            optimizer=optimizer,
            loss=CE,
            metrics=["accuracy"],
            vid_weight=vid_weight,
            kd_weight=1.0 if kd else 0.0,
            temperature=temperature,
        )
    history = model.fit(batches.dataset(), epochs=epochs, shuffle=False, verbose=0).history
    last = {k: round(float(v[-1]), 5) for k, v in history.items()}
    return student, last, steps


def ran(runs):
    """The methods of `METHODS` that have runs, in that order."""
    return [m for m in METHODS if any(r["method"] == m for r in runs)]


def summary(values):
    values = [100 * v for v in values]
    std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return float(np.mean(values)), std


def size_label(size, total):
    return f"all ({total:,})" if size == total else f"{size:,}"


def write_outputs(args, report):
    path = os.path.join(args.output_dir, "results.json")
    with open(path, "w") as f:
        json.dump(report, f, indent=1)
    runs = report["runs"]
    if not runs:
        return
    total = report["data"]["train"]
    sizes = sorted({r["size"] for r in runs})
    seeds = sorted({r["seed"] for r in runs})
    lines = [f"# SST-2: {report['title']}", ""]
    t = report.get("teacher")
    if t:
        lines += [
            f"Teacher ({t['config']['layers']} layers × {t['config']['hidden']}, "
            f"{t['parameters']:,} parameters, all {total:,} phrases, epochs: {t['epochs']}): "
            f"dev {100 * t['dev_accuracy']:.2f} %, test {100 * t['test_accuracy']:.2f} %. "
            f"Student: {report['student_parameters']:,} parameters.",
            "",
        ]
    for split in ("test", "dev"):
        lines += [
            f"**{split.capitalize()} accuracy (%)**, mean ± std over seeds {seeds} "
            "(per seed in brackets)"
            + (
                ""
                if split == "test"
                else " — the dev split also chose λ and T (on another seed)"
                if report.get("tuning")
                else " — λ and T fixed by `--vid-weight` / `--temperature`"
            )
            + ":",
            "",
            "| method | " + " | ".join(size_label(s, total) for s in sizes) + " |",
            "|---" * (len(sizes) + 1) + "|",
        ]
        for method in ran(runs):
            cells = []
            for size in sizes:
                accs = [
                    r[f"{split}_accuracy"]
                    for seed in seeds
                    for r in runs
                    if (r["method"], r["size"], r["seed"]) == (method, size, seed)
                ]
                if not accs:
                    cells.append("")
                    continue
                mean, std = summary(accs)
                per_seed = ", ".join(f"{100 * a:.2f}" for a in accs)
                cells.append(f"{mean:.2f} ± {std:.2f} ({per_seed})")
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        lines.append("")
    differences = []
    for a, b in (("kd+vid", "kd"), ("vid", "student"), ("kd", "student")):
        for size in sizes:
            diffs = []
            for seed in seeds:
                ra = [r for r in runs if (r["method"], r["size"], r["seed"]) == (a, size, seed)]
                rb = [r for r in runs if (r["method"], r["size"], r["seed"]) == (b, size, seed)]
                if ra and rb:
                    diffs.append(100 * (ra[0]["test_accuracy"] - rb[0]["test_accuracy"]))
            if diffs:
                differences.append(
                    f"- {a} − {b}, {size_label(size, total)}: {np.mean(diffs):+.2f} "
                    f"(per seed {', '.join(f'{d:+.2f}' for d in diffs)})"
                )
    if differences:
        lines += ["**Differences on test (points), per seed:**", "", *differences]
    if report.get("tuning"):
        lines += [
            "",
            f"**Choice on dev** (seed {args.tune_seed}, {report['tuning_size']:,} phrases; "
            "dev accuracy %, test not scored):",
            "",
            "| run | dev accuracy |",
            "|---|---|",
        ]
        for r in report["tuning"]:
            lines.append(f"| {r['label']} | {100 * r['dev_accuracy']:.2f} |")
        c = report["chosen"]
        lines += ["", f"Chosen: KD temperature {c['temperature']}, VID λ {c['vid_weight']}."]
    wall = report.get("wall_seconds")
    if wall:
        lines += ["", f"Wall time: {wall / 60:.1f} min ({report['machine']['cpu']}, "]
        lines[-1] += (
            f"{report['machine']['nproc']} cores, backend {report['machine']['backend']})."
        )
    with open(os.path.join(args.output_dir, "results.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    plot(args, report, sizes, seeds, total)


def plot(args, report, sizes, seeds, total):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = report["runs"]
    fig, axes = plt.subplots(1, len(sizes), figsize=(4.2 * len(sizes), 3.8), squeeze=False)
    colors = ["#7f7f7f", "#1f77b4", "#2ca02c", "#d62728"]
    for ax, size in zip(axes[0], sizes):
        for i, method in enumerate(ran(runs)):
            accs = [
                100 * r["test_accuracy"]
                for r in runs
                if r["method"] == method and r["size"] == size
            ]
            if not accs:
                continue
            mean, std = summary([a / 100 for a in accs])
            ax.errorbar(
                i, mean, yerr=std, fmt="s", ms=8, capsize=6, color=colors[METHODS.index(method)]
            )
            ax.scatter(
                [i + 0.15] * len(accs),
                accs,
                color=colors[METHODS.index(method)],
                s=18,
                facecolors="none",
            )
        if report.get("teacher"):
            ax.axhline(
                100 * report["teacher"]["test_accuracy"], ls="--", color="k", lw=1, label="teacher"
            )
            ax.legend(loc="lower right", fontsize=8)
        ax.set_xticks(range(len(ran(runs))), ran(runs))
        ax.set_xlim(-0.5, len(ran(runs)) - 0.5)
        ax.grid(axis="y", alpha=0.3)
        ax.set_title(f"{size_label(size, total)} labelled phrases")
        ax.set_ylabel("test accuracy (%)")
        lows = [100 * r["test_accuracy"] for r in runs]
        ax.set_ylim(max(0, min(lows) - 5), 100 * max(r["test_accuracy"] for r in runs) + 5)
    fig.suptitle(
        f"SST-2 test, mean ± std over seeds {seeds} (squares: mean ± std; circles: seeds)",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(os.path.join(args.output_dir, "sst2.png"), dpi=120)
    plt.close(fig)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=DATA_DIR)
    p.add_argument("--output-dir", default=HERE)
    p.add_argument("--cache-dir", default=None, help="teacher weights are kept here if given")
    p.add_argument("--sizes", default="1000,all")
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--min-count", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--teacher-layers", type=int, default=4)
    p.add_argument("--teacher-hidden", type=int, default=128)
    p.add_argument("--teacher-heads", type=int, default=4)
    p.add_argument("--teacher-ffn", type=int, default=256)
    p.add_argument("--teacher-epochs", type=int, default=3)
    p.add_argument("--teacher-lr", type=float, default=5e-4)
    p.add_argument("--student-layers", type=int, default=2)
    p.add_argument("--student-hidden", type=int, default=64)
    p.add_argument("--student-heads", type=int, default=2)
    p.add_argument("--student-ffn", type=int, default=128)
    p.add_argument("--student-lr", type=float, default=1e-3)
    p.add_argument("--epochs-small", type=int, default=20, help="epochs at sizes <= small-limit")
    p.add_argument("--epochs-all", type=int, default=1, help="epochs at larger sizes")
    p.add_argument("--small-limit", type=int, default=10000)
    p.add_argument("--pairs", default="uniform", choices=("uniform", "layers", "embeddings"))
    p.add_argument("--vid-weight", type=float, default=None, help="skip the choice on dev")
    p.add_argument("--temperature", type=float, default=None, help="skip the choice on dev")
    p.add_argument("--tune-seed", type=int, default=99)
    p.add_argument("--tune-vid-weights", default="0.1,1,10")
    p.add_argument("--tune-temperatures", default="1,4")
    p.add_argument("--limit-train", type=int, default=None, help="smoke tests: fewer phrases")
    p.add_argument("--limit-eval", type=int, default=None, help="smoke tests: fewer sentences")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    wall_start = time.time()
    tf.get_logger().setLevel("ERROR")  # a new model's predict traces anew: not a problem
    os.makedirs(args.output_dir, exist_ok=True)
    train_text, train_y = load_tsv(os.path.join(args.data_dir, "sst2_train.tsv"))
    dev_text, dev_y = load_tsv(os.path.join(args.data_dir, "sst2_dev.tsv"))
    test_text, test_y = load_tsv(os.path.join(args.data_dir, "sst2_test.tsv"))
    if args.limit_train:
        train_text, train_y = train_text[: args.limit_train], train_y[: args.limit_train]
    if args.limit_eval:
        dev_text, dev_y = dev_text[: args.limit_eval], dev_y[: args.limit_eval]
        test_text, test_y = test_text[: args.limit_eval], test_y[: args.limit_eval]
    vocabulary = build_vocabulary(train_text, min_count=args.min_count)
    encode = lambda text: token_ids(text, vocabulary, args.max_length)  # noqa: E731
    train, dev, test = (
        (encode(train_text), train_y),
        (encode(dev_text), dev_y),
        (encode(test_text), test_y),
    )
    cut = {
        name: int(sum(len(s.split()) > args.max_length - 2 for s in text))
        for name, text in (("train", train_text), ("dev", dev_text), ("test", test_text))
    }
    unk = vocabulary["[UNK]"]
    oov = {
        name: float(np.mean(np.concatenate([s[1:-1] for s in ids]) == unk))
        for name, (ids, _) in (("train", train), ("dev", dev), ("test", test))
    }
    total = len(train_y)
    sizes = [total if s == "all" else int(s) for s in args.sizes.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    methods = args.methods.split(",")
    report = {
        "title": (
            f"BERT {args.teacher_layers}×{args.teacher_hidden} → "
            f"{args.student_layers}×{args.student_hidden}, token-wise VID and KD"
            + ("" if args.pairs == "uniform" else f" (VID pairs: {args.pairs} only)")
        ),
        "pairs": pairs_of(args),
        "command": "python " + " ".join(sys.argv),
        "machine": machine(),
        "args": vars(args),
        "data": {
            "train": total,
            "dev": len(dev_y),
            "test": len(test_y),
            "vocabulary": len(vocabulary),
            "sentences_cut": cut,
            "unknown_word_rate": oov,
        },
        "runs": [],
        "tuning": [],
    }
    log(f"machine: {report['machine']}")
    log(f"data: {report['data']}")

    teacher, report["teacher"] = make_teacher(args, len(vocabulary), train, dev, test)
    write_outputs(args, report)

    def subset(size, seed):
        if size >= total:
            return train
        rows = np.random.default_rng(1000 + seed).permutation(total)[:size]
        return [train[0][r] for r in rows], train[1][rows]

    # Choice on dev: one seed outside the final ones, the smallest size.
    small = min(sizes)
    report["tuning_size"] = small
    candidates = [("student", None, 1.0)]
    if args.temperature is None and "kd" in methods:
        candidates += [("kd", None, float(t)) for t in args.tune_temperatures.split(",")]
    if args.vid_weight is None and "vid" in methods:
        candidates += [("vid", float(w), 1.0) for w in args.tune_vid_weights.split(",")]
    chosen = {"temperature": args.temperature, "vid_weight": args.vid_weight}
    if len(candidates) > 1:
        for method, weight, temperature in candidates:
            start = time.time()
            student, last, steps = train_student(
                args,
                teacher,
                method,
                subset(small, args.tune_seed),
                args.tune_seed,
                weight or 0.0,
                temperature,
            )
            label = method + (
                f", λ {weight}" if weight else f", T {temperature}" if method == "kd" else ""
            )
            run = {
                "label": label,
                "method": method,
                "vid_weight": weight,
                "temperature": temperature,
                "dev_accuracy": accuracy(student, *dev),
                "seconds": round(time.time() - start, 1),
                "steps": steps,
                "last_epoch": last,
            }
            report["tuning"].append(run)
            log(f"tune {label}: dev {run['dev_accuracy']:.4f} ({run['seconds']} s, {steps} steps)")
            write_outputs(args, report)
        for key, method in (("temperature", "kd"), ("vid_weight", "vid")):
            if chosen[key] is None:
                runs = [r for r in report["tuning"] if r["method"] == method]
                chosen[key] = max(runs, key=lambda r: r["dev_accuracy"])[key] if runs else 1.0
    chosen = {k: 1.0 if v is None else v for k, v in chosen.items()}
    report["chosen"] = chosen
    log(f"chosen on dev: {chosen}")

    for size in sizes:
        for seed in seeds:
            for method in methods:
                start = time.time()
                student, last, steps = train_student(
                    args,
                    teacher,
                    method,
                    subset(size, seed),
                    seed,
                    chosen["vid_weight"],
                    chosen["temperature"],
                )
                train_seconds = time.time() - start
                report["student_parameters"] = student.count_params()
                run = {
                    "method": method,
                    "size": size,
                    "seed": seed,
                    "dev_accuracy": accuracy(student, *dev),
                    "test_accuracy": accuracy(student, *test),
                    "train_seconds": round(train_seconds, 1),
                    "seconds": round(time.time() - start, 1),
                    "steps": steps,
                    "last_epoch": last,
                }
                report["runs"].append(run)
                log(
                    f"{method} size {size} seed {seed}: dev {run['dev_accuracy']:.4f} "
                    f"test {run['test_accuracy']:.4f} ({run['seconds']} s, {steps} steps) "
                    f"last epoch {last}"
                )
                report["wall_seconds"] = round(time.time() - wall_start, 1)
                write_outputs(args, report)
    report["machine"]["loadavg_end"] = os.getloadavg()
    report["wall_seconds"] = round(time.time() - wall_start, 1)
    write_outputs(args, report)
    log(f"done in {report['wall_seconds'] / 60:.1f} min")


if __name__ == "__main__":
    main()
