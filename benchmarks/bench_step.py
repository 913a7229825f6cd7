"""Step-time and memory benchmark of `VIDDistiller` on one Keras backend.

One process runs one backend. Every contender is built, warmed up (so
compilation is excluded), then timed in rounds: each round times every
contender for `--steps` steps over the same prepared NumPy batches (single
steps alternate between the contenders, in an order rotated from round to
round), and the ratios are formed *within* the round. The reported numbers
are medians over rounds, so load from other processes on a shared machine
hits numerator and denominator alike.

Each step is one `train_on_batch` / `predict_on_batch` call (both return
NumPy, so every backend is synchronised), never a whole `fit()` call, whose
set-up and tear-down vary by up to 0.6 s on TensorFlow/CPU.

Contenders:
    student          `student.train_on_batch`, task loss only
    teacher          `teacher.predict_on_batch` (inference mode)
    vid              `keras_vid.VIDDistiller.train_on_batch`
    vid_compare      the same on the equal-shape pairs used for the
                     keras.distillation comparison (only when those differ)
    vid_mse          keras_vid's trainer with regressor-free MSE heads, i.e.
                     keras.distillation's loss on keras_vid's single pass
    keras_distiller  `keras.distillation.Distiller` + `FeatureDistillation("mse")`
    torch_loop_keras hand-written torch loop over the same Keras models (torch)
    torch_loop_pure  hand-written torch loop over `torch.nn` WRNs (torch)
    torch_student    pure-torch student-only training step (torch)

Peak memory (`--measure-memory`) runs each contender in a fresh subprocess
(`--only NAME`): after the imports the child resets the kernel's peak-RSS
counter (`/proc/self/clear_refs`), builds and trains the contender, and
reports the peak RSS it added. On GPU it is the backend's peak device memory.

Usage:
    python benchmarks/bench_step.py --backend jax --config small
    python benchmarks/bench_step.py --backend torch --config wrn --measure-memory
    python benchmarks/bench_step.py --backend tensorflow --config wrn --gpu
    python benchmarks/bench_step.py --backend jax --smoke          # CI
"""

import argparse
import ctypes
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import time

RESULT_TAG = "BENCH_RESULT "
MEMORY_TAG = "BENCH_MEMORY "
GROUPS = ("group1", "group2", "group3")

# teacher / student are (depth, width) of `keras_vid.experiments.models.wide_resnet`.
# `compare_student` is the student used for the keras.distillation comparison
# when the main pairs have different shapes (FeatureDistillation needs equal
# shapes): same depth, the teacher's width, same three pairs.
CONFIGS = {
    "wrn": dict(
        teacher=(40, 2),
        student=(16, 1),
        compare_student=(16, 2),
        input_shape=(32, 32, 3),
        batch_size=128,
        steps=2,
        repeats=5,
        warmup=2,
        # Each memory run builds and compiles in a fresh process; on the
        # 2-core CPU the WRN ones take minutes, so only these are measured.
        memory_contenders=("student", "teacher", "vid", "keras_distiller", "torch_loop_pure"),
    ),
    "small": dict(
        teacher=(16, 1),
        student=(10, 1),
        compare_student=None,
        input_shape=(32, 32, 3),
        batch_size=32,
        steps=5,
        repeats=7,
        warmup=3,
    ),
    # Smoke: tiny 3-convolution CNNs (`tiny_cnn`), so that compiling stays cheap.
    "smoke": dict(
        teacher=(0, 1),
        student=(0, 1),
        compare_student=None,
        input_shape=(8, 8, 3),
        batch_size=4,
        steps=1,
        repeats=1,
        warmup=1,
    ),
}
GPU_BATCH_SIZE = {"wrn": 512, "small": 256, "smoke": 4}
NUM_CLASSES = 10
NUM_BATCHES = 4


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", default=os.environ.get("KERAS_BACKEND", "tensorflow"))
    parser.add_argument("--config", default="small", choices=sorted(CONFIGS))
    parser.add_argument("--smoke", action="store_true", help="tiny models, 1 step per contender")
    parser.add_argument("--gpu", action="store_true", help="mixed_bfloat16, larger batch")
    parser.add_argument("--jit", default="auto", choices=("auto", "on", "off"))
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None, help="steps per contender per round")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--measure-memory", action="store_true")
    parser.add_argument("--memory-steps", type=int, default=3)
    parser.add_argument(
        "--memory-only",
        action="store_true",
        help="re-measure memory only, updating the timings already saved in --json",
    )
    parser.add_argument("--only", default=None, help="internal: one contender, for memory")
    parser.add_argument("--json", default=None, help="write the results to this file")
    args = parser.parse_args(argv)
    if args.smoke:
        args.config = "smoke"
    return args


# Default jit per backend, chosen by measurement (see BENCHMARKS.md): XLA on
# JAX (always compiled); TensorFlow's XLA (`jit_compile=True`) is faster on
# this CPU too; torch stays eager, as `torch.compile` takes minutes on CPU
# and Keras's torch backend does not compile `train_on_batch` by default.
DEFAULT_JIT = {"jax": True, "tensorflow": True, "torch": False}


def resolve_jit(args):
    if args.jit == "auto":
        return DEFAULT_JIT[args.backend]
    return args.jit == "on"


# ------------------------------------------------------------------ set-up


def setup_backend(args):
    os.environ["KERAS_BACKEND"] = args.backend
    if args.backend == "jax":
        # With the default partitionable threefry, XLA:CPU here takes 5-15 s
        # to compile each `uniform` / `normal` (one per weight shape), which
        # dominates model building; the steps draw no random numbers, so this
        # only changes set-up time (and the initial weights' values).
        os.environ.setdefault("JAX_THREEFRY_PARTITIONABLE", "0")
    if args.gpu and args.backend == "jax":
        # Preallocation would hide the peak; allocate on demand.
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    if keras.backend.backend() != args.backend:
        raise RuntimeError(f"Keras was imported with backend {keras.backend.backend()}")
    if args.backend == "tensorflow" and args.gpu:
        import tensorflow as tf

        for gpu in tf.config.list_physical_devices("GPU"):
            tf.config.experimental.set_memory_growth(gpu, True)
    if args.gpu:
        keras.config.set_dtype_policy("mixed_bfloat16")
    return keras


def make_batches(config, batch_size):
    import numpy as np

    rng = np.random.default_rng(0)
    shape = (batch_size,) + config["input_shape"]
    return [
        (
            rng.standard_normal(shape, dtype="float32"),
            rng.integers(0, NUM_CLASSES, batch_size).astype("int32"),
        )
        for _ in range(NUM_BATCHES)
    ]


def tiny_cnn(keras, width, input_shape, name):
    """Three convolutions named like the WRN group ends, for the smoke run."""
    inputs = keras.Input(input_shape)
    x = inputs
    for group, (channels, stride) in enumerate(((4, 1), (8, 2), (16, 2)), start=1):
        x = keras.layers.Conv2D(channels * width, 3, stride, "same", name=f"group{group}")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(NUM_CLASSES, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


def build_wrn(keras, spec, config, name):
    """WRN-depth-width from `spec = (depth, width)`; depth 0 is `tiny_cnn`."""
    from keras_vid.experiments.models import wide_resnet

    depth, width = spec
    if depth == 0:
        return tiny_cnn(keras, width, config["input_shape"], name)
    return wide_resnet(depth, width, NUM_CLASSES, config["input_shape"], name=name)


def optimizer(keras):
    return keras.optimizers.SGD(learning_rate=0.1, momentum=0.9)


def task_loss(keras):
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def mse_head(keras, name):
    """A regressor-free head: the per-example mean of (t − s)², the loss of
    `FeatureDistillation("mse")`. On keras_vid's trainer it shows what the
    single-pass step costs without the VID regressors."""
    from keras import ops

    class MSEHead(keras.layers.Layer):
        def build(self, student_shape, teacher_shape):
            self.built = True

        def call(self, student, teacher, training=None):
            diff = ops.cast(teacher, "float32") - ops.cast(student, "float32")
            return ops.mean(ops.square(diff), axis=tuple(range(1, len(diff.shape))))

    return MSEHead(name=name)


def contender_names(args, config):
    names = ["student", "teacher", "vid"]
    if config["compare_student"] is not None:
        names.append("vid_compare")
    names += ["vid_mse", "keras_distiller"]
    if args.backend == "torch":
        names += ["torch_loop_keras", "torch_loop_pure", "torch_student"]
    return names


def build_contender(name, keras, args, config, jit):
    """Build one contender; return a function `step(batch)` that runs one
    synchronised training (or inference) step."""
    import numpy as np

    # Not `keras.utils.set_random_seed`: it imports TensorFlow (~10 s) on every backend.
    random.seed(0)
    np.random.seed(0)
    pairs = [(g, g) for g in GROUPS]
    student_spec = config["student"]
    if name in ("vid_compare", "vid_mse", "keras_distiller") and config["compare_student"]:
        student_spec = config["compare_student"]

    if name == "torch_loop_pure" or name == "torch_student":
        from torch_reference import PureTorchLoop

        teacher_spec = (*config["teacher"], NUM_CLASSES) if name == "torch_loop_pure" else None
        loop = PureTorchLoop(teacher_spec, (*student_spec, NUM_CLASSES), amp=args.gpu)
        run = loop.train_step if name == "torch_loop_pure" else loop.student_step
        prepared = {}

        def step(batch):
            key = id(batch[0])
            if key not in prepared:
                prepared[key] = loop.prepare(*batch)
            return run(*prepared[key])

        return step

    teacher = None
    if name != "student":
        teacher = build_wrn(keras, config["teacher"], config, "teacher")
    student = None
    if name != "teacher":
        student = build_wrn(keras, student_spec, config, "student")

    if name == "student":
        student.compile(optimizer=optimizer(keras), loss=task_loss(keras), jit_compile=jit)
        return lambda batch: student.train_on_batch(*batch)
    if name == "teacher":
        teacher.compile(jit_compile=jit)
        return lambda batch: teacher.predict_on_batch(batch[0])
    if name in ("vid", "vid_compare"):
        import keras_vid

        distiller = keras_vid.VIDDistiller(teacher, student, pairs=pairs)
        distiller.compile(
            optimizer=optimizer(keras), loss=task_loss(keras), vid_weight=1.0, jit_compile=jit
        )
        return lambda batch: distiller.train_on_batch(*batch)
    if name == "vid_mse":
        import keras_vid

        heads = [mse_head(keras, f"mse_head_{i}") for i in range(len(pairs))]
        distiller = keras_vid.VIDDistiller(teacher, student, pairs=pairs, heads=heads)
        distiller.compile(
            optimizer=optimizer(keras), loss=task_loss(keras), vid_weight=1.0, jit_compile=jit
        )
        return lambda batch: distiller.train_on_batch(*batch)
    if name == "keras_distiller":
        from keras.distillation import Distiller, FeatureDistillation

        losses = [
            FeatureDistillation("mse", teacher_layer_name=t, student_layer_name=s)
            for s, t in pairs
        ]
        distiller = Distiller(teacher, student, distillation_losses=losses)
        distiller.compile(optimizer=optimizer(keras), loss=task_loss(keras), jit_compile=jit)
        return lambda batch: distiller.train_on_batch(*batch)
    if name == "torch_loop_keras":
        from torch_reference import KerasModulesLoop

        loop = KerasModulesLoop(teacher, student, pairs, amp=args.gpu)
        return lambda batch: loop.train_step(*batch)
    raise ValueError(f"Unknown contender {name!r}")


# ------------------------------------------------------------------ timing


def timed(step, batches, steps):
    start = time.perf_counter()
    for i in range(steps):
        step(batches[i % len(batches)])
    return (time.perf_counter() - start) / steps


def ratio_definitions(names, backend):
    """`label: (numerator contenders, denominator contenders, target)`."""
    compare = "vid_compare" if "vid_compare" in names else "vid"
    ratios = {
        "floor = vid / (student + teacher)": (["vid"], ["student", "teacher"], "≤ 1.10"),
        f"keras_distiller / {compare}": (["keras_distiller"], [compare], "≥ 1.0 (1.3 small)"),
        "keras_distiller / vid_mse (same loss)": (["keras_distiller"], ["vid_mse"], "—"),
    }
    if compare == "vid":
        ratios["floor, MSE heads = vid_mse / (student + teacher)"] = (
            ["vid_mse"],
            ["student", "teacher"],
            "—",
        )
    if backend == "torch":
        ratios["torch_loop_keras / vid"] = (["torch_loop_keras"], ["vid"], "≥ 0.9")
        ratios["torch_loop_pure / vid"] = (["torch_loop_pure"], ["vid"], "≥ 0.9")
        ratios["torch_loop_pure / student"] = (["torch_loop_pure"], ["student"], "—")
        ratios["student / torch_student"] = (["student"], ["torch_student"], "—")
    return ratios


def run_timing(keras, args, config, jit):
    batches = make_batches(config, args.batch_size)
    names = contender_names(args, config)
    steps = {}
    for name in names:
        print(f"building + warming up {name}", file=sys.stderr, flush=True)
        steps[name] = build_contender(name, keras, args, config, jit)
        timed(steps[name], batches, config["warmup"])
    ratios = ratio_definitions(names, args.backend)
    times = {name: [] for name in names}
    round_ratios = {label: [] for label in ratios}
    for r in range(args.repeats):
        # Single steps alternate between contenders, so that load from other
        # processes spreads evenly over them; the order rotates every round.
        order = names[r % len(names) :] + names[: r % len(names)]
        this_round = dict.fromkeys(order, 0.0)
        for i in range(args.steps):
            batch = batches[i % len(batches)]
            for name in order:
                start = time.perf_counter()
                steps[name](batch)
                this_round[name] += (time.perf_counter() - start) / args.steps
        for name, value in this_round.items():
            times[name].append(value)
        for label, (num, den, _) in ratios.items():
            round_ratios[label].append(
                sum(this_round[n] for n in num) / sum(this_round[d] for d in den)
            )
        print(
            f"round {r + 1}/{args.repeats}: "
            + ", ".join(f"{n}={1000 * t:.1f}ms" for n, t in this_round.items()),
            file=sys.stderr,
            flush=True,
        )
    return {
        "step_ms": {n: 1000 * statistics.median(v) for n, v in times.items()},
        "step_ms_spread": {n: [1000 * min(v), 1000 * max(v)] for n, v in times.items()},
        "ratios": {
            label: {
                "median": statistics.median(values),
                "min": min(values),
                "max": max(values),
                "target": ratios[label][2],
            }
            for label, values in round_ratios.items()
        },
    }


# ------------------------------------------------------------------ memory


def peak_memory_mb(backend, gpu):
    """Peak process RSS on CPU; peak device memory (backend API) on GPU."""
    if gpu:
        if backend == "torch":
            import torch

            return torch.cuda.max_memory_allocated() / 2**20
        if backend == "tensorflow":
            import tensorflow as tf

            return tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20
        import jax

        return jax.devices()[0].memory_stats()["peak_bytes_in_use"] / 2**20
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _release_freed_heap():
    """Return freed heap pages to the system (glibc), so that RSS drops to
    what is still in use."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _proc_status_mb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB
    raise KeyError(field)


def run_only(keras, args, config, jit):
    """Child process of `--measure-memory`: one contender, then its peak.

    On CPU (Linux) the peak is measured from after the imports: writing 5 to
    `/proc/self/clear_refs` resets the peak RSS (VmHWM) to the current RSS, so
    `VmHWM - VmRSS(at reset)` is what building and training the contender
    added, free of the import-time transients of TensorFlow/JAX/torch.

    The steady-state reading leaves out the compiling step's transients: after
    that step, `malloc_trim(0)` hands the heap memory already freed (compiler
    scratch, dead temporaries) back to the system, the peak is reset again,
    and the next steps' peak is read. Without the trim the reset would only
    restart from an RSS that still holds every page ever touched.
    """
    batches = make_batches(config, args.batch_size)
    if args.backend == "torch":
        import torch  # noqa: F401  (imported by every torch contender)
    import keras_vid  # noqa: F401

    start_mb = 0.0
    if not args.gpu:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        start_mb = _proc_status_mb("VmRSS")
    steady = None
    if args.only:
        step = build_contender(args.only, keras, args, config, jit)
        timed(step, batches, 1)  # the compiling step
        if not args.gpu:
            # A second reset: the steady-state peak leaves out compilation.
            peak_with_compile = _proc_status_mb("VmHWM")
            _release_freed_heap()
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        timed(step, batches, args.memory_steps)
        if not args.gpu:
            steady = _proc_status_mb("VmHWM")
    peak = peak_memory_mb(args.backend, args.gpu)
    if not args.gpu:
        peak = max(peak_with_compile, _proc_status_mb("VmHWM")) if args.only else start_mb
    record = {"name": args.only, "peak_mb": peak, "start_mb": start_mb, "steady_mb": steady}
    print(MEMORY_TAG + json.dumps(record))


def child_command(args, name):
    command = [sys.executable, os.path.abspath(__file__), "--backend", args.backend]
    command += ["--config", args.config, "--jit", args.jit, "--only", name]
    command += ["--batch-size", str(args.batch_size), "--memory-steps", str(args.memory_steps)]
    if args.gpu:
        command.append("--gpu")
    return command


def run_memory(args, config):
    measured = config.get("memory_contenders")
    names = [
        n
        for n in contender_names(args, config)
        if n != "vid_mse" and (measured is None or n in measured)
    ]
    env = dict(os.environ, KERAS_BACKEND=args.backend)
    peaks, over, steady = {}, {}, {}
    for name in names:
        print(f"memory: {name}", file=sys.stderr, flush=True)
        out = subprocess.run(
            child_command(args, name), env=env, capture_output=True, text=True, check=False
        )
        lines = [line for line in out.stdout.splitlines() if line.startswith(MEMORY_TAG)]
        if out.returncode or not lines:
            raise RuntimeError(f"memory run of {name} failed:\n{out.stderr[-3000:]}")
        record = json.loads(lines[-1][len(MEMORY_TAG) :])
        peaks[name] = record["peak_mb"]
        over[name] = record["peak_mb"] - record["start_mb"]
        if record.get("steady_mb") is not None:
            steady[name] = record["steady_mb"] - record["start_mb"]
    floor = over["student"] + over["teacher"]
    ratio = over["vid"] / floor if floor > 0 else None
    result = {
        "peak_mb": peaks,
        "added_mb": over,
        "ratio": {"label": "vid / (student + teacher)", "value": ratio, "target": "≤ 1.15"},
    }
    if steady:
        floor = steady["student"] + steady["teacher"]
        result["steady_added_mb"] = steady
        result["steady_ratio"] = {
            "label": "vid / (student + teacher), after compilation",
            "value": steady["vid"] / floor if floor > 0 else None,
            "target": "≤ 1.15",
        }
    return result


# ------------------------------------------------------------------ main


def versions(backend):
    import keras
    import numpy

    info = {
        "python": sys.version.split()[0],
        "keras": keras.__version__,
        "numpy": numpy.__version__,
    }
    if backend == "tensorflow":
        import tensorflow as tf

        info["tensorflow"] = tf.__version__
    elif backend == "jax":
        import jax

        info["jax"] = jax.__version__
        info["jaxlib"] = jax.lib.__version__ if hasattr(jax.lib, "__version__") else ""
    else:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    return info


def print_report(result):
    print(f"\n== {result['backend']} / {result['config']} ==  (jit_compile={result['jit']})")
    for name, ms in result["step_ms"].items():
        low, high = result["step_ms_spread"][name]
        print(f"  {name:18s} {ms:9.1f} ms/step   [{low:.1f} – {high:.1f}]")
    for label, r in result["ratios"].items():
        spread = f"[{r['min']:.3f} – {r['max']:.3f}]"
        print(f"  {label:38s} {r['median']:.3f}  {spread}  target {r['target']}")
    if "memory" in result:
        memory = result["memory"]
        for name, mb in memory["added_mb"].items():
            print(f"  peak {name:18s} {mb:9.1f} MiB added (peak {memory['peak_mb'][name]:.0f})")
        for name, mb in memory.get("steady_added_mb", {}).items():
            print(f"  steady {name:16s} {mb:9.1f} MiB added after compilation")
        for key in ("ratio", "steady_ratio"):
            if key in memory and memory[key]["value"] is not None:
                r = memory[key]
                print(f"  memory {r['label']}: {r['value']:.3f}  target {r['target']}")


def main(argv=None):
    args = parse_args(argv)
    config = CONFIGS[args.config]
    args.repeats = args.repeats or config["repeats"]
    args.steps = args.steps or config["steps"]
    if args.batch_size is None:
        args.batch_size = GPU_BATCH_SIZE[args.config] if args.gpu else config["batch_size"]
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    keras = setup_backend(args)
    jit = resolve_jit(args)
    if args.only:
        run_only(keras, args, config, jit)
        return None

    if args.memory_only:
        with open(args.json) as f:
            result = json.load(f)
        result["memory"] = run_memory(args, config)
        save(result, args.json)
        print_report(result)
        print(RESULT_TAG + json.dumps(result))
        return result

    start = time.perf_counter()
    result = {
        "backend": args.backend,
        "config": args.config,
        "gpu": args.gpu,
        "jit": jit,
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "steps_per_repeat": args.steps,
        "versions": versions(args.backend),
        "models": {k: config[k] for k in ("teacher", "student", "compare_student", "input_shape")},
    }
    result.update(run_timing(keras, args, config, jit))
    result["wall_s"] = time.perf_counter() - start
    save(result, args.json)  # the timings survive if the memory runs are cut short
    if args.measure_memory:
        result["memory"] = run_memory(args, config)
        result["wall_s"] = time.perf_counter() - start
        save(result, args.json)
    print_report(result)
    print(RESULT_TAG + json.dumps(result))
    return result


def save(result, path):
    if path:
        with open(path, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
