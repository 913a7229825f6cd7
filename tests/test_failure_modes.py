"""Every case of `benchmarks/failure_sweep.py` on the current backend.

Each case is a misuse or an awkward real model a new user meets (issue 13):
it must be handled (trained or answered correctly, its values checked) or
fail early with an error naming the fault. The sweep script counts the same
cases on every backend; here each is one test.
"""

import importlib.util
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location(
    "failure_sweep", os.path.join(ROOT, "benchmarks", "failure_sweep.py")
)
sweep = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sweep)


@pytest.mark.parametrize(
    "name,expect,names,function", [(c[0], c[2], c[3], c[4]) for c in sweep.CASES],
    ids=[c[0] for c in sweep.CASES],
)  # fmt: skip
def test_failure_case(name, expect, names, function):
    outcome, detail = sweep.run_case(expect, names, function)
    wanted = "clear error" if expect == "error" else "handled"
    assert outcome == wanted, f"{name}: {outcome}: {detail}"


def test_sweep_counts_each_class():
    """The classifier itself: a wrong value, a vague error and a named error."""

    def wrong():
        sweep.check(False, "value off")

    def vague():
        raise RuntimeError("shape mismatch at node 7")

    def named():
        raise ValueError("layer 'x' is shared")

    assert sweep.run_case("works", (), wrong)[0] == "silent wrong"
    assert sweep.run_case("works", (), vague)[0] == "confusing error"
    assert sweep.run_case("error", ("'x'",), vague)[0] == "confusing error"
    assert sweep.run_case("error", ("'x'",), named)[0] == "clear error"
    assert sweep.run_case("error", ("'x'",), lambda: None)[0] == "silent wrong"
