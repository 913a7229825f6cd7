"""`keras_vid.experiments.precision`: the training precision chosen by timing."""

import keras
import pytest

from keras_vid.experiments import precision


@pytest.mark.parametrize(
    "float32_s, bfloat16_s, expected",
    [
        (1.0, 0.5, "mixed_bfloat16"),  # 2× faster (an AMX CPU, a GPU)
        (1.0, 1.0 / 1.2, "mixed_bfloat16"),  # exactly the margin
        (1.0, 0.9, "float32"),  # within the margin: keep the precise one
        (0.1, 1.0, "float32"),  # 10× slower (an AVX2-only CPU)
    ],
)
def test_bfloat16_is_chosen_only_when_clearly_faster(float32_s, bfloat16_s, expected):
    assert precision.choose_policy(float32_s, bfloat16_s) == expected


def test_auto_times_both_and_explicit_policies_pass_through(monkeypatch):
    timed = []

    def fake_seconds(policy, shape, repeats):
        timed.append(policy)
        return {"float32": 0.3, "mixed_bfloat16": 0.1}[policy]

    monkeypatch.setattr(precision, "_step_seconds", fake_seconds)
    assert precision.resolve_dtype_policy("auto") == "mixed_bfloat16"
    assert sorted(timed) == ["float32", "mixed_bfloat16"]
    assert precision.resolve_dtype_policy("float32") == "float32"
    assert len(timed) == 2  # an explicit policy is not timed


def test_the_timed_step_runs_in_the_policy_and_leaves_the_global_one(monkeypatch):
    """A real (tiny) timing on this backend: positive seconds, and the
    global dtype policy is the same afterwards, even for the bfloat16 run."""
    before = keras.config.dtype_policy().name
    seconds = precision._step_seconds("mixed_bfloat16", (4, 8, 8, 8), repeats=1)
    assert seconds > 0
    assert keras.config.dtype_policy().name == before
    assert precision.fastest_dtype_policy((4, 8, 8, 8), repeats=1) in precision.POLICIES
    assert keras.config.dtype_policy().name == before
