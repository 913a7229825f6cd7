"""The examples run as users run them."""

import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).parent.parent


def test_custom_loop_example_learns(capsys):
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        import custom_loop
    finally:
        sys.path.pop(0)
    custom_loop.main(steps=60)
    lines = capsys.readouterr().out.splitlines()
    losses = [float(line.split()[3]) for line in lines if line.startswith("step")]
    assert losses[-1] < losses[0]
    assert "learned σ²" in lines[-1]


@pytest.mark.parametrize("script", ["quickstart.py"])
def test_quickstart_runs_and_prints_the_table(script):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / script),
            "--seeds",
            "1",
            "--epochs",
            "2",
            "--teacher-epochs",
            "1",
            "--unlabelled-epochs",
            "1",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    table = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    assert [row.split("|")[1].strip() for row in table[1:]] == [
        "teacher (all data)",
        "student (10/class)",
        "student + VID (10/class)",
        "student + VID + unlabelled (10/class)",
    ]
    gains = [line for line in result.stdout.splitlines() if " − student: " in line]
    assert [line.split(" − ")[0] for line in gains] == [
        "student + VID",
        "student + VID + unlabelled",
    ]
    assert "seed spread (std) of the student alone" in result.stdout
