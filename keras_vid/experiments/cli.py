"""Command line: `python -m keras_vid.experiments [options]`.

Trains (or loads from the cache) a teacher, then trains one student per
method × images per class × seed with the same recipe, printing one line
per run, and writes `results.json`, `results.md` and `accuracy.png` into
`--output-dir` after every run (so an interrupted grid keeps what it did,
and `--resume` skips the runs already there). The defaults are the
paper's CIFAR-10 reduced-data experiment; see `--help` for the flags that
scale it down for a CPU.
"""

import argparse
import dataclasses
import json
import os
import sys
import time

import keras

from keras_vid.experiments.recipes import FEATURE_POINTS, METHODS, MethodConfig
from keras_vid.experiments.report import write_outputs
from keras_vid.experiments.runner import DataConfig, get_teacher, load_dataset, run_one
from keras_vid.experiments.training import TrainingConfig

DEFAULT_METHODS = ("student", "kd", "fitnet", "at", "vid-i")
DEFAULTS = MethodConfig()


def _list(cast):
    def parse(text):
        return [cast(v) for v in text.split(",") if v.strip()]

    return parse


def _per_class(text):
    return None if text.strip().lower() == "all" else int(text)


def _width(text):
    text = text.strip().lower()
    if text in ("none", ""):
        return None
    if text.endswith("x"):
        return ("x", float(text[:-1]))
    return int(text)


def _optional_int(text):
    return None if text.strip().lower() in ("none", "all", "") else int(text)


def build_parser():
    p = argparse.ArgumentParser(
        prog="python -m keras_vid.experiments",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Reduced-data distillation experiment (Ahn et al. 2019, table 1): "
        "methods × training images per class × seeds.",
    )
    d = p.add_argument_group("data")
    d.add_argument(
        "--dataset",
        default="cifar10",
        help="tensorflow-datasets name, image folder (<dir>/<split>/<class>/*) or .npz path "
        "('{split}' is replaced by the split name). Default: cifar10.",
    )
    d.add_argument("--data-dir", default=None, help="tensorflow-datasets data_dir.")
    d.add_argument("--train-split", default="train")
    d.add_argument("--test-split", default="test")
    d.add_argument(
        "--eval-per-class",
        type=_optional_int,
        default=None,
        help="score a fixed stratified subset of the test split (default: all of it).",
    )
    d.add_argument(
        "--validation-per-class",
        type=_optional_int,
        default=None,
        help="carve this many images per class (stratified, fixed) out of the training split "
        "as a validation split that no student trains on.",
    )
    d.add_argument(
        "--score-on",
        choices=("test", "validation"),
        default="test",
        help="score students on the test split (default) or the validation split "
        "(for choosing hyperparameters).",
    )
    d.add_argument("--no-augment", action="store_true", help="no pad-crop and no flip.")
    d.add_argument("--no-flip", action="store_true", help="pad-crop without horizontal flips.")

    g = p.add_argument_group("grid")
    g.add_argument(
        "--teacher",
        default="wrn-40-2",
        help="wrn-D-W, cnn-C1,C2,..[xN], mlp-U1,.., or airbench-W1,W2,.. with --teacher-model "
        "(a raw-RGB teacher from keras_vid.experiments.fast_teacher, adapted to the normalised "
        "images)",
    )
    g.add_argument("--student", default="wrn-16-1")
    g.add_argument(
        "--methods",
        type=_list(str),
        default=list(DEFAULT_METHODS),
        help=f"comma-separated, from {','.join(METHODS)}.",
    )
    g.add_argument(
        "--per-class",
        type=_list(_per_class),
        default=[5000, 1000, 500, 100],
        help="training images per class ('all' for the whole split). Default: 5000,1000,500,100.",
    )
    g.add_argument("--seeds", type=_list(int), default=[0, 1, 2])

    t = p.add_argument_group("training (the paper's recipe by default)")
    t.add_argument("--epochs", type=int, default=200)
    t.add_argument(
        "--min-steps",
        type=int,
        default=0,
        help="lengthen runs on small subsets to at least this many optimizer steps.",
    )
    t.add_argument("--teacher-epochs", type=int, default=None, help="default: --epochs.")
    t.add_argument(
        "--teacher-per-class",
        type=_optional_int,
        default=None,
        help="train the teacher on a subset (default: the whole training split).",
    )
    t.add_argument(
        "--teacher-model",
        default=None,
        help="a saved teacher (.keras) to load instead of training or looking one up.",
    )
    t.add_argument("--batch-size", type=int, default=128)
    t.add_argument("--lr", type=float, default=0.1)
    t.add_argument(
        "--weight-decay",
        type=float,
        default=5e-4,
        help="L2 coefficient as in PyTorch's SGD (rescaled for Keras's decoupled decay).",
    )
    t.add_argument(
        "--clipnorm", type=float, default=None, help="clip every gradient tensor to this norm."
    )

    m = p.add_argument_group("method settings")
    m.add_argument(
        "--vid-weight",
        type=float,
        default=DEFAULTS.vid_weight,
        help="λ per VID pair (mean reduction; the library's default).",
    )
    m.add_argument(
        "--fitnet-weight",
        type=float,
        default=DEFAULTS.fitnet_weight,
        help="λ per FitNet pair (σ² fixed at 1 on the standardised teacher features).",
    )
    m.add_argument("--at-weight", type=float, default=1000.0, help="β per AT pair.")
    m.add_argument("--kd-weight", type=float, default=1.0)
    m.add_argument("--temperature", type=float, default=4.0)
    m.add_argument("--init-variance", type=float, default=DEFAULTS.init_variance)
    m.add_argument(
        "--hidden-width",
        type=_width,
        default=None,
        help="width of μ's hidden layers: an int, or '<k>x' for k × the teacher's channels "
        "of each pair (the reproduction's 2C is '2x'). Default: the teacher's channels.",
    )
    m.add_argument(
        "--min-variance", type=float, default=DEFAULTS.min_variance, help="VID heads' floor on σ²."
    )
    m.add_argument(
        "--raw-teacher-features",
        action="store_true",
        help="score the raw teacher features (VIDHead(normalize_teacher=False), the PyTorch "
        "references) instead of standardising them per channel.",
    )
    m.add_argument(
        "--alpha-gradient-scale",
        type=lambda v: v if v == "channels" else float(v),
        default="channels",
        help="VID heads' gradient factor for α: a number (1 is the PyTorch references), or "
        "'channels' (C under the mean reduction; the default).",
    )
    m.add_argument(
        "--head-batch-norm",
        choices=("none", "hidden", "all"),
        default="none",
        help="BatchNormalization in μ: none, before the hidden ReLUs, or after every layer.",
    )
    m.add_argument(
        "--task-weight",
        type=float,
        default=1.0,
        help="weight of the task loss in fitnet, vid-i, vid-lp and kd+vid-i "
        "(student, kd and at keep 1).",
    )
    m.add_argument("--head-depth", type=_optional_int, default=None)
    m.add_argument(
        "--stages",
        type=_list(int),
        default=None,
        help="stage pairs used by fitnet, at and vid-i, 1-based (e.g. 2,3). Default: all.",
    )

    m.add_argument(
        "--feature-point",
        choices=FEATURE_POINTS,
        default="output",
        help="which stage features fitnet, at and vid-i pair: each stage's output (after its "
        "ReLU) or the same feature before its last ReLU.",
    )

    o = p.add_argument_group("output")
    o.add_argument("--output-dir", default=None, help="default: results/<dataset name>.")
    o.add_argument(
        "--cache-dir",
        default=os.path.join(os.path.expanduser("~"), ".cache", "keras_vid"),
        help="where trained teachers are kept and reused.",
    )
    o.add_argument("--resume", action="store_true", help="keep matching runs already written.")
    o.add_argument("--title", default=None)
    o.add_argument("--verbose", type=int, default=0, help="Keras fit verbosity.")
    t.add_argument(
        "--dtype-policy",
        default=None,
        help="Keras dtype policy for every model, e.g. mixed_bfloat16 or mixed_float16 on a GPU "
        "(the VID and KD terms stay float32). Default: float32.",
    )
    for action in p._actions:  # the formatter shows defaults only beside a help text
        if action.help is None:
            action.help = "(default: %(default)s)"
    return p


def _dataset_name(source):
    base = os.path.basename(os.path.normpath(source))
    for suffix in (".npz", "_{split}"):
        base = base.removesuffix(suffix)
    return base.replace("{split}", "").strip("_-") or "dataset"


def _run_key(run):
    return (run["method"], run["per_class"], run["seed"])


def main(argv=None):
    args = build_parser().parse_args(argv)
    previous_policy = keras.config.dtype_policy()
    if args.dtype_policy:
        keras.config.set_dtype_policy(args.dtype_policy)
    try:
        return _run(args, argv)
    finally:
        keras.config.set_dtype_policy(previous_policy)


def _run(args, argv):
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown:
        raise SystemExit(f"Unknown method(s) {unknown}; choose from {', '.join(METHODS)}.")
    output_dir = args.output_dir or os.path.join("results", _dataset_name(args.dataset))
    training = TrainingConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        weight_decay=args.weight_decay,
        min_steps=args.min_steps,
        augmentation=not args.no_augment,
        flip=not args.no_flip,
        clipnorm=args.clipnorm,
    )
    teacher_training = dataclasses.replace(
        training, epochs=args.teacher_epochs or args.epochs, min_steps=0
    )
    data_config = DataConfig(
        source=args.dataset,
        train_split=args.train_split,
        test_split=args.test_split,
        data_dir=args.data_dir,
        eval_per_class=args.eval_per_class,
        teacher_per_class=args.teacher_per_class,
        validation_per_class=args.validation_per_class,
        score_on=args.score_on,
    )
    methods = MethodConfig(
        vid_weight=args.vid_weight,
        fitnet_weight=args.fitnet_weight,
        at_weight=args.at_weight,
        kd_weight=args.kd_weight,
        temperature=args.temperature,
        init_variance=args.init_variance,
        hidden_width=None if isinstance(args.hidden_width, tuple) else args.hidden_width,
        hidden_multiplier=args.hidden_width[1] if isinstance(args.hidden_width, tuple) else None,
        head_depth=args.head_depth,
        stages=tuple(args.stages) if args.stages else None,
        feature_point=args.feature_point,
        min_variance=args.min_variance,
        use_batch_norm=False if args.head_batch_norm == "none" else args.head_batch_norm,
        task_weight=args.task_weight,
        alpha_gradient_scale=args.alpha_gradient_scale,
        normalize_teacher=not args.raw_teacher_features,
    )
    config = {
        "command": "python -m keras_vid.experiments "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "backend": keras.backend.backend(),
        "dtype_policy": args.dtype_policy,
        "teacher": args.teacher,
        "student": args.student,
        "data": dataclasses.asdict(data_config),
        "training": dataclasses.asdict(training),
        "teacher_training": dataclasses.asdict(teacher_training),
        "methods": dataclasses.asdict(methods),
    }
    config = json.loads(json.dumps(config))  # as it reads back from results.json

    def log(message):
        print(message, flush=True)

    start = time.time()
    data = load_dataset(data_config)
    log(
        f"data {args.dataset}: {len(data.train_labels)} train / {len(data.test_labels)} scored "
        f"test images, shape {data.input_shape}, {data.num_classes} classes; "
        f"backend {keras.backend.backend()}"
    )
    teacher, teacher_info = get_teacher(
        args.teacher,
        data_config,
        teacher_training,
        data,
        args.cache_dir,
        log=log,
        path=args.teacher_model,
        verbose=args.verbose,
    )
    runs = []
    results_path = os.path.join(output_dir, "results.json")
    if args.resume and os.path.exists(results_path):
        with open(results_path) as file:
            previous = json.load(file)
        same = {k: v for k, v in previous.get("config", {}).items() if k != "command"}
        if same == {k: v for k, v in config.items() if k != "command"}:
            runs = previous.get("runs", [])
            log(f"resuming: {len(runs)} run(s) kept from {results_path}")
        else:
            log(f"not resuming: {results_path} was made with other settings")
    done = {_run_key(r) for r in runs}
    grid = [
        (method, per_class, seed)
        for per_class in args.per_class
        for seed in args.seeds
        for method in args.methods
    ]
    for index, (method, per_class, seed) in enumerate(grid, start=1):
        if (method, per_class, seed) in done:
            continue
        record = run_one(
            method,
            teacher,
            args.teacher,
            args.student,
            data,
            per_class,
            seed,
            training,
            methods,
            verbose=args.verbose,
        )
        runs.append(record)
        log(
            f"[{index}/{len(grid)}] {method:9s} per_class={per_class!s:>5} seed={seed}: "
            f"{record['accuracy']:.2f} % {record['scored_on']} ({record['epochs']} epochs, "
            f"{record['steps']} steps, {record['train_time_s']:.0f} s; "
            f"elapsed {time.time() - start:.0f} s)"
        )
        payload = {
            "config": config,
            "teacher": {k: v for k, v in teacher_info.items() if k != "cache_path"},
            "runs": runs,
            "elapsed_s": round(time.time() - start, 1),
        }
        write_outputs(output_dir, payload, args.methods, args.title)
    payload = {
        "config": config,
        "teacher": {k: v for k, v in teacher_info.items() if k != "cache_path"},
        "runs": runs,
        "elapsed_s": round(time.time() - start, 1),
    }
    table = write_outputs(output_dir, payload, args.methods, args.title)
    log(table)
    log(
        f"wrote {output_dir}/results.json, results.md, accuracy.png in {time.time() - start:.0f} s"
    )
    return payload


def console_main():
    """Entry point for a console script (returns nothing, so the exit code is 0)."""
    main()
