"""Data-parallel distillation matches single-device training.

Each backend's check runs `distribution_script.py` in a subprocess (the
device count must be set before the backend initialises) and only from the
matching backend's test run:

- JAX: `keras.distribution.DataParallel` over 4 virtual CPU devices.
- TensorFlow: `tf.distribute.MirroredStrategy` over 2 logical CPU devices.
- PyTorch: `DistributedDataParallel` with `gloo`, 2 processes.

After 3 SGD steps on the same global batches from the same weights, the
logs and every student and head weight (α included) agree within
rtol 1e-4, atol 1e-6.
"""

import json
import os
import pathlib
import subprocess
import sys

import pytest
from conftest import BACKEND

HERE = pathlib.Path(__file__).parent

SETUP = {
    "jax": "DataParallel over 4 virtual CPU devices",
    "tensorflow": "MirroredStrategy over 2 logical CPU devices",
    "torch": "DistributedDataParallel (gloo), 2 processes",
}


@pytest.fixture(scope="module")
def report():
    if BACKEND not in SETUP:
        pytest.skip(f"no data-parallel check for the {BACKEND} backend")
    env = dict(os.environ, KERAS_BACKEND=BACKEND, TF_CPP_MIN_LOG_LEVEL="3")
    env["PYTHONPATH"] = os.pathsep.join([str(HERE.parent), env.get("PYTHONPATH", "")])
    result = subprocess.run(
        [sys.executable, str(HERE / "distribution_script.py"), BACKEND],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_data_parallel_matches_single_device(report):
    parity = report["parity"]
    # Normalized by rtol·|expected| + atol: ≤ 1 means within rtol 1e-4, atol 1e-6.
    assert parity["rel_logs"] <= 1.0, parity
    assert parity["rel_weights"] <= 1.0, parity
    assert parity["weights_moved"] > 100.0, "the steps did not move the weights"
    assert report["devices"] > 1
    # TensorFlow's mirrored copies and PyTorch's processes hold equal weights.
    assert report.get("replica_spread", 0.0) == 0.0


def test_nan_in_one_replica_skips_the_step_everywhere(report):
    guard = report["guard"]
    assert guard["skipped_steps"] == 1
    assert guard["input_flag"] == 1
    assert guard["rel_change"] == 0.0, guard
    if BACKEND == "tensorflow":
        assert guard["replica_spread"] == 0.0
    if BACKEND == "torch":
        assert guard["all_ranks_skipped"]
        assert guard["rel_change_any_rank"] == 0.0


def test_batch_norm_statistics(report):
    if BACKEND == "jax":
        # The jitted step computes the global batch's statistics (GSPMD): the
        # parity run above trains plain BatchNorm and compares its moving
        # statistics. The weights are replicated on every device.
        assert report["batch_norm_variables_compared"] == 4
        assert report["replicated"] and report["kernel_devices"] == report["devices"]
        return
    bn = report["batch_norm"]
    # Each replica keeps the moving mean of its own slice: the copies differ.
    assert bn["per_slice_error"] < 1e-6, bn
    assert bn["replica_spread"] > 1e-4, bn
    if BACKEND == "tensorflow":
        # Reading the variable gives replica 0's copy.
        assert bn["read_is_replica_0"] == 0.0
