"""The example notebooks (`examples/notebooks/`): each is its script in
keras.io's script-with-markdown convention, converts back to the script
exactly, is current, and its code runs offline (a few steps) on every backend."""

import os
import pathlib
import sys

import nbformat
import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples"))
import notebooks  # noqa: E402

SCRIPTS = notebooks.SCRIPTS
SMOKE_ARGS = {
    "quickstart.py": [
        "--seeds", "1", "--epochs", "1", "--teacher-epochs", "1", "--unlabelled-epochs", "1",
    ],
    "distil_transformer.py": ["--quick", "--teacher-epochs", "1"],
}  # fmt: skip
# The transformer example reads SST-2 from the shared data folder beside the repository.
SST2 = ROOT.parent / "shared" / "data" / "sst2_train.tsv"


def _notebook(name):
    return nbformat.read(notebooks.NOTEBOOKS / name.replace(".py", ".ipynb"), as_version=4)


@pytest.mark.parametrize("name", SCRIPTS)
def test_notebook_converts_back_to_its_script(name):
    source = (ROOT / "examples" / name).read_text()
    notebook = notebooks.script_to_notebook(source)
    assert notebooks.notebook_to_script(notebook) == source
    kinds = [cell.cell_type for cell in notebook.cells]
    assert kinds[0] == "markdown" and kinds.count("markdown") >= 3 and "code" in kinds
    assert notebook.cells[-1].source == notebooks.NOTEBOOK_MAIN


@pytest.mark.parametrize("name", SCRIPTS)
def test_committed_notebook_is_current_and_valid(name):
    committed = _notebook(name)
    nbformat.validate(committed)
    expected = notebooks.script_to_notebook((ROOT / "examples" / name).read_text())
    assert [(c.cell_type, c.source) for c in committed.cells] == [
        (c.cell_type, c.source) for c in expected.cells
    ], "stale: run `python examples/notebooks.py`"


@pytest.mark.parametrize("name", SCRIPTS)
def test_notebook_code_runs_offline(name, monkeypatch, capsys):
    """Run every code cell in order, from the notebook's folder, with the
    last cell's `main([])` given the smoke arguments instead."""
    if name == "distil_transformer.py" and not SST2.exists():
        pytest.skip(f"SST-2 is not at {SST2}")
    monkeypatch.chdir(notebooks.NOTEBOOKS)
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
    namespace = {"__name__": "notebook"}
    cells = [c.source for c in _notebook(name).cells if c.cell_type == "code"]
    for source in cells[:-1]:
        exec(compile(source, f"{name}-cell", "exec"), namespace)  # noqa: S102
    namespace["main"](SMOKE_ARGS[name])
    out = capsys.readouterr().out
    assert ("| teacher (all data)" in out) if name == "quickstart.py" else ("dev accuracy" in out)
    assert os.getcwd() == str(notebooks.NOTEBOOKS)
