"""`examples/variance_insight.py` in its smoke mode (one epoch, 50 images)."""

import pathlib
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).parent.parent


def test_variance_insight_smoke(tmp_path, capsys):
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        import variance_insight
    finally:
        sys.path.pop(0)
    out = tmp_path / "variance.png"
    argv = ["--epochs", "1", "--teacher-epochs", "1", "--samples", "50", "--out", str(out)]
    history, summary = variance_insight.main(argv)

    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [len(pair.variance) for pair in summary] == [32, 64, 128, 10]
    assert history["vid_weight_0"] == [2.0] and history["kd_weight"] == [0.0]
    for k, pair in enumerate(summary):
        assert history[f"sigma2_median_{k}"][0] == pytest.approx(np.median(pair.variance))
    printed = capsys.readouterr().out
    assert "channels ignored" in printed and f"wrote {out}" in printed
