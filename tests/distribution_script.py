"""Data-parallel distillation against single-device training, as JSON.

Run by `test_distribution.py` in a subprocess, because the device count must
be set before the backend initialises:

    KERAS_BACKEND=jax python distribution_script.py jax
    KERAS_BACKEND=tensorflow python distribution_script.py tensorflow
    KERAS_BACKEND=torch python distribution_script.py torch

Each case trains the same distiller (weights from a seeded NumPy generator)
for 3 SGD steps on a global batch of 16, once on one device and once
data-parallel, then reports the largest differences in the logs and the
weights (student, heads incl. α), the step guard under the distribution (a
NaN in the last replica's slice) and the BatchNorm statistics per replica.
The last line of stdout is the JSON report.
"""

import json
import os
import sys
import time

START = time.time()

BACKEND = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("KERAS_BACKEND", "jax")
os.environ["KERAS_BACKEND"] = BACKEND
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
JAX_DEVICES = 4
TF_REPLICAS = 2
TORCH_PROCESSES = 2
if BACKEND == "jax":
    # Virtual CPU devices; a lighter LLVM pipeline compiles the step faster.
    os.environ["XLA_FLAGS"] = " ".join(
        [
            os.environ.get("XLA_FLAGS", ""),
            f"--xla_force_host_platform_device_count={JAX_DEVICES}",
            "--xla_backend_optimization_level=0",
            "--xla_llvm_disable_expensive_passes=true",
        ]
    )
if BACKEND == "tensorflow":
    import tensorflow as tf

    _cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        _cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(TF_REPLICAS)]
    )

import numpy as np  # noqa: E402

# On PyTorch the parent only spawns the processes (and skips importing Keras).
_SPAWNER = __name__ == "__main__" and BACKEND == "torch"
if not _SPAWNER:
    import keras

    from keras_vid import VIDDistiller

PAIRS = [("s_g1", "t_g1"), ("s_g2", "t_g2"), ("s_pool", "t_logits")]
GLOBAL_BATCH = 16
STEPS = 3


def _numpy_random():
    """Draw initial weights with NumPy: they are overwritten by `set_weights`,
    and JAX's per-shape random kernels take seconds each to compile."""
    from keras.src.backend import random as backend_random

    rng = np.random.default_rng(0)

    def uniform(shape, minval=0.0, maxval=1.0, dtype=None, seed=None):
        values = rng.uniform(minval, maxval, size=tuple(shape))
        return keras.ops.convert_to_tensor(values.astype(dtype or "float32"))

    def normal(shape, mean=0.0, stddev=1.0, dtype=None, seed=None):
        values = rng.normal(mean, stddev, size=tuple(shape))
        return keras.ops.convert_to_tensor(values.astype(dtype or "float32"))

    backend_random.uniform = uniform
    backend_random.normal = normal
    backend_random.truncated_normal = normal


if not _SPAWNER:
    _numpy_random()


def cnn(prefix, width, batch_norm="plain", num_classes=5):
    """`conftest.small_cnn` with the same layer names; `batch_norm` is
    `"plain"`, `"sync"` (`synchronized=True`, TensorFlow) or `None`."""
    inputs = keras.Input((8, 8, 3))

    def norm(x, name):
        if batch_norm is None:
            return x
        return keras.layers.BatchNormalization(
            synchronized=batch_norm == "sync", momentum=0.9, name=name
        )(x)

    x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"{prefix}_conv1")(
        inputs
    )
    x = keras.layers.ReLU(name=f"{prefix}_g1")(norm(x, f"{prefix}_bn1"))
    x = keras.layers.MaxPooling2D(name=f"{prefix}_down")(x)
    x = keras.layers.Conv2D(2 * width, 3, padding="same", use_bias=False, name=f"{prefix}_conv2")(
        x
    )
    x = keras.layers.ReLU(name=f"{prefix}_g2")(norm(x, f"{prefix}_bn2"))
    x = keras.layers.GlobalAveragePooling2D(name=f"{prefix}_pool")(x)
    outputs = keras.layers.Dense(num_classes, name=f"{prefix}_logits")(x)
    return keras.Model(inputs, outputs, name=prefix)


def distiller(batch_norm="plain", pairs=PAIRS):
    """A compiled distiller whose weights depend only on the seed."""
    model = VIDDistiller(
        cnn("t", 8, batch_norm),
        cnn("s", 4, batch_norm),
        pairs=pairs,
        head_options={"depth": 1},
    )
    model.compile(
        optimizer=keras.optimizers.SGD(0.05),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        vid_weight=[1.0, 0.5, 2.0][: len(pairs)],
        kd_weight=0.5,
    )
    rng = np.random.default_rng(42)
    variables = model.teacher.weights + model.student.weights
    variables += [v for head in model.heads for v in head.weights]
    for variable in sorted(variables, key=lambda v: v.path):
        shape = tuple(variable.shape)
        if "moving_variance" in variable.path or "teacher_variance" in variable.path:
            value = rng.uniform(0.5, 1.5, size=shape)
        elif "statistics_count" in variable.path:  # `fit` calibrates on the global batch
            value = np.zeros(shape)
        elif "gamma" in variable.path:
            value = rng.uniform(0.8, 1.2, size=shape)
        elif "alpha" in variable.path:
            value = rng.uniform(0.5, 2.0, size=shape)
        else:
            value = rng.normal(scale=0.3, size=shape)
        variable.assign(value.astype("float32"))
    return model


def data(n=GLOBAL_BATCH * STEPS):
    rng = np.random.default_rng(0)
    x = rng.random((n, 8, 8, 3)).astype("float32")
    y = rng.integers(0, 5, size=n)
    return x, y


def nan_batch():
    """One global batch with a NaN in the last replica's slice only."""
    x, y = data(GLOBAL_BATCH)
    x[-1, 3, 3, 0] = np.nan
    return x, y


def trained_weights(model):
    """Student, heads (incl. α) and BatchNorm statistics, by path."""
    variables = model.student.weights + [v for head in model.heads for v in head.weights]
    return {v.path: keras.ops.convert_to_numpy(v.value).copy() for v in variables}


def log_keys(model):
    return ["loss", "task_loss", "kd_loss"] + [f"vid_{k}" for k in range(len(model.heads))]


RTOL, ATOL = 1e-4, 1e-6


def largest_rel_diff(a, b):
    """Largest |a − b| / (RTOL·|b| + ATOL) over matching entries (≤ 1 means
    `np.allclose(a, b, RTOL, ATOL)`) and the entry where it is reached."""
    worst, where = 0.0, None
    for key in b:
        expected = np.asarray(b[key], "float64")
        diff = np.abs(np.asarray(a[key], "float64") - expected)
        rel = float(np.max(diff / (RTOL * np.abs(expected) + ATOL)))
        if rel > worst:
            worst, where = rel, key
    return worst, where


def fit_logs(model, x, y):
    history = model.fit(x, y, batch_size=GLOBAL_BATCH, epochs=1, shuffle=False, verbose=0)
    return {key: float(history.history[key][-1]) for key in log_keys(model)}


def compare(single, multi):
    """The report of a single-device run against a data-parallel one."""
    (single_logs, single_weights), (multi_logs, multi_weights) = single, multi
    rel_logs, log_key = largest_rel_diff(multi_logs, single_logs)
    rel_weights, weight_key = largest_rel_diff(multi_weights, single_weights)
    moved = largest_rel_diff(single_weights, _initial_weights)[0]
    return {
        "single_logs": single_logs,
        "multi_logs": multi_logs,
        "rel_logs": rel_logs,
        "worst_log": log_key,
        "rel_weights": rel_weights,
        "worst_weight": weight_key,
        "weights_moved": moved,
    }


_initial_weights = None
_LAPS = {}
_last = [time.time()]


def lap(name):
    """Seconds since the previous lap, kept for the report."""
    now = time.time()
    _LAPS[name] = round(now - _last[0], 2)
    _last[0] = now


def guard_report(model, before, after_weights):
    """What a step with a NaN in one replica's slice did."""
    rel, key = largest_rel_diff(after_weights, before)
    return {
        "rel_change": rel,
        "changed": key,
        "skipped_steps": int(keras.ops.convert_to_numpy(model.step_guard.skipped_steps.value)),
        "input_flag": int(keras.ops.convert_to_numpy(model.step_guard.last_skip_flags.value)[0]),
    }


# --------------------------------------------------------------------- JAX


def run_jax():
    import jax

    global _initial_weights
    x, y = data()
    report = {"devices": len(jax.devices())}

    keras.distribution.set_distribution(None)
    single = distiller()
    _initial_weights = trained_weights(single)
    single_run = (fit_logs(single, x, y), trained_weights(single))
    lap("single")

    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=jax.devices()))
    multi = distiller()
    multi_run = (fit_logs(multi, x, y), trained_weights(multi))
    lap("data_parallel")
    report["parity"] = compare(single_run, multi_run)
    report["batch_norm_variables_compared"] = sum("moving" in k for k in multi_run[1])
    kernel = multi.student.get_layer("s_conv1").kernel.value
    report["replicated"] = bool(kernel.sharding.is_fully_replicated)
    report["kernel_devices"] = len(kernel.sharding.device_set)

    before = trained_weights(multi)
    x_nan, y_nan = nan_batch()
    fit_logs(multi, x_nan, y_nan)
    report["guard"] = guard_report(multi, before, trained_weights(multi))
    return report


# -------------------------------------------------------------- TensorFlow


def _replica_values(variable, strategy):
    value = variable.value
    return [np.asarray(v) for v in strategy.experimental_local_results(value)]


def run_tensorflow():
    import tensorflow as tf

    global _initial_weights
    x, y = data()
    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    strategy = tf.distribute.MirroredStrategy(devices)
    report = {"devices": strategy.num_replicas_in_sync}

    # Parity, with synchronized BatchNorm (global-batch statistics).
    single = distiller("sync")
    _initial_weights = trained_weights(single)
    single_run = (fit_logs(single, x, y), trained_weights(single))
    lap("single")
    with strategy.scope():
        multi = distiller("sync")
    multi_run = (fit_logs(multi, x, y), trained_weights(multi))
    lap("mirrored")
    report["parity"] = compare(single_run, multi_run)
    replica_spread = 0.0
    for variable in multi.student.weights + [v for h in multi.heads for v in h.weights]:
        copies = _replica_values(variable, strategy)
        replica_spread = max(replica_spread, float(np.max(np.abs(copies[0] - copies[-1]))))
    report["replica_spread"] = replica_spread

    # The step guard: a NaN in the last replica's slice skips the step on
    # every replica.
    before = trained_weights(multi)
    x_nan, y_nan = nan_batch()
    fit_logs(multi, x_nan, y_nan)
    report["guard"] = guard_report(multi, before, trained_weights(multi))
    for variable in multi.student.weights + [multi.step_guard.skipped_steps]:
        copies = _replica_values(variable, strategy)
        replica_spread = max(replica_spread, float(np.max(np.abs(copies[0] - copies[-1]))))
    report["guard"]["replica_spread"] = replica_spread
    lap("guard")

    # Plain BatchNorm: each replica normalizes with, and keeps, the
    # statistics of its own slice; the copies of the moving mean diverge.
    with strategy.scope():
        plain = distiller("plain", pairs=PAIRS[2:])
    bn = plain.student.get_layer("s_bn1")
    initial = np.asarray(bn.moving_mean.value)
    conv = keras.Model(plain.student.input, plain.student.get_layer("s_conv1").output)
    xb, yb = data(GLOBAL_BATCH)
    features = np.asarray(conv(xb))
    slices = np.split(features, strategy.num_replicas_in_sync)
    expected = [bn.momentum * initial + (1 - bn.momentum) * s.mean(axis=(0, 1, 2)) for s in slices]
    global_mean = bn.momentum * initial + (1 - bn.momentum) * features.mean(axis=(0, 1, 2))
    plain.fit(xb, yb, batch_size=GLOBAL_BATCH, epochs=1, shuffle=False, verbose=0)
    copies = _replica_values(bn.moving_mean, strategy)
    lap("plain_batch_norm")
    report["batch_norm"] = {
        "per_slice_error": max(float(np.max(np.abs(c - e))) for c, e in zip(copies, expected)),
        "replica_spread": float(np.max(np.abs(copies[0] - copies[-1]))),
        "read_is_replica_0": float(np.max(np.abs(np.asarray(bn.moving_mean.value) - copies[0]))),
        "mean_of_copies_vs_global": float(np.max(np.abs(np.mean(copies, 0) - global_mean))),
    }
    return report


# ----------------------------------------------------------------- PyTorch


def _torch_worker(rank, world, init_file, out_dir):
    """One DDP process: rank 0 first trains the single-process reference,
    then both train on their `DistributedSampler` slices of every batch."""
    import torch
    from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

    global _initial_weights
    torch.set_num_threads(1)
    x, y = data()
    report = {}
    if rank == 0:
        single = distiller(None)
        _initial_weights = trained_weights(single)
        single_run = (fit_logs(single, x, y), trained_weights(single))

    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world
    )

    def loader(x, y):
        dataset = TensorDataset(torch.from_numpy(x), torch.from_numpy(y))
        sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=False)
        return DataLoader(dataset, batch_size=GLOBAL_BATCH // world, sampler=sampler)

    def fit(model, x, y):
        history = model.fit(loader(x, y), epochs=1, shuffle=False, verbose=0)
        return {key: float(history.history[key][-1]) for key in log_keys(model)}

    multi = distiller(None)
    multi_logs = fit(multi, x, y)
    # Keras's trackers are per process: the global log is the mean of the
    # processes' logs (equal slices).
    gathered = [None] * world
    torch.distributed.all_gather_object(gathered, multi_logs)
    multi_logs = {key: float(np.mean([g[key] for g in gathered])) for key in multi_logs}
    multi_weights = trained_weights(multi)
    spread = [None] * world
    torch.distributed.all_gather_object(spread, multi_weights)
    if rank == 0:
        report["parity"] = compare(single_run, (multi_logs, multi_weights))
        report["rank_logs_differ"] = gathered[0] != gathered[1]
        report["replica_spread"] = max(
            float(np.max(np.abs(spread[0][k] - spread[-1][k]))) for k in spread[0]
        )

    before = trained_weights(multi)
    x_nan, y_nan = nan_batch()
    fit(multi, x_nan, y_nan)
    guard = guard_report(multi, before, trained_weights(multi))
    guards = [None] * world
    torch.distributed.all_gather_object(guards, guard)

    # Plain BatchNorm: DDP synchronizes gradients only; Keras's BatchNorm
    # statistics are non-trainable variables, not buffers, so each process
    # keeps those of its own slice.
    plain = distiller("plain", pairs=PAIRS[2:])
    bn = plain.student.get_layer("s_bn1")
    initial = keras.ops.convert_to_numpy(bn.moving_mean.value)
    conv = keras.Model(plain.student.input, plain.student.get_layer("s_conv1").output)
    xb, yb = data(GLOBAL_BATCH)
    features = keras.ops.convert_to_numpy(conv(xb))
    mine = np.arange(GLOBAL_BATCH)[rank::world]  # this process's slice
    expected = bn.momentum * initial + (1 - bn.momentum) * features[mine].mean(axis=(0, 1, 2))
    fit(plain, xb, yb)
    copy = keras.ops.convert_to_numpy(bn.moving_mean.value)
    copies = [None] * world
    torch.distributed.all_gather_object(copies, (copy, float(np.max(np.abs(copy - expected)))))
    if rank == 0:
        report["guard"] = guards[0]
        report["guard"]["all_ranks_skipped"] = all(g["skipped_steps"] == 1 for g in guards)
        report["guard"]["rel_change_any_rank"] = max(g["rel_change"] for g in guards)
        report["batch_norm"] = {
            "per_slice_error": max(error for _, error in copies),
            "replica_spread": float(np.max(np.abs(copies[0][0] - copies[-1][0]))),
        }
        with open(os.path.join(out_dir, "report.json"), "w") as f:
            json.dump(report, f)
    # Both processes leave together: a process that tears the gloo group down
    # while its peer is still in a collective can abort ("terminate called
    # without an active exception"), which failed a loaded CI run once.
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


def run_torch():
    import tempfile

    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as out_dir:
        init_file = os.path.join(out_dir, "init")
        mp.spawn(_torch_worker, args=(TORCH_PROCESSES, init_file, out_dir), nprocs=TORCH_PROCESSES)
        with open(os.path.join(out_dir, "report.json")) as f:
            report = json.load(f)
    report["devices"] = TORCH_PROCESSES
    return report


RUNS = {"jax": run_jax, "tensorflow": run_tensorflow, "torch": run_torch}

if __name__ == "__main__":
    imported = time.time() - START
    result = RUNS[BACKEND]()
    result["seconds"] = {"import": imported, "total": time.time() - START, **_LAPS}
    print(json.dumps(result))
