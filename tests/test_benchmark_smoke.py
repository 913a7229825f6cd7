"""CI smoke run of `benchmarks/bench_step.py`, so the benchmark cannot rot.

It runs the script in `--smoke` mode (tiny CNNs, one step per contender) on
the current backend, in a subprocess with the same `KERAS_BACKEND`, and checks
that every contender reported a finite, positive step time and every ratio a
finite, positive value. It times nothing.
"""

import json
import math
import os
import subprocess
import sys

import keras

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "bench_step.py")
RESULT_TAG = "BENCH_RESULT "


def _run(*extra):
    backend = keras.backend.backend()
    env = dict(os.environ, KERAS_BACKEND=backend)
    out = subprocess.run(
        [sys.executable, SCRIPT, "--smoke", "--backend", backend, *extra],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-4000:]
    lines = [line for line in out.stdout.splitlines() if line.startswith(RESULT_TAG)]
    assert len(lines) == 1, out.stdout[-4000:]
    return backend, json.loads(lines[0][len(RESULT_TAG) :])


def test_benchmark_smoke_reports_every_contender():
    backend, result = _run()
    expected = {"student", "teacher", "vid", "vid_mse", "keras_distiller"}
    if backend == "torch":
        expected |= {"torch_loop_keras", "torch_loop_pure", "torch_student"}
    assert set(result["step_ms"]) == expected
    for name, ms in result["step_ms"].items():
        assert math.isfinite(ms) and ms > 0, (name, ms)
    assert result["ratios"]
    for label, ratio in result["ratios"].items():
        assert math.isfinite(ratio["median"]) and ratio["median"] > 0, (label, ratio)


def test_token_benchmark_smoke_reports_a_ratio():
    backend = keras.backend.backend()
    script = os.path.join(ROOT, "benchmarks", "bench_tokens.py")
    out = subprocess.run(
        [sys.executable, script, "--smoke", "--backend", backend],
        env=dict(os.environ, KERAS_BACKEND=backend),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-4000:]
    (line,) = [x for x in out.stdout.splitlines() if x.startswith("BENCH_TOKENS ")]
    result = json.loads(line[len("BENCH_TOKENS ") :])
    assert result["backend"] == backend
    assert set(result["step_ms"]) == {"masked", "unmasked"}
    assert all(math.isfinite(v) and v > 0 for v in result["step_ms"].values())
    assert math.isfinite(result["ratio_median"]) and result["ratio_median"] > 0
