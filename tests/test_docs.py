"""Documentation: every public symbol has a docstring with its arguments and
an example (the API reference pages render them), and every one of them is
on a reference page of the site."""

import importlib
import inspect
import pathlib

import pytest

ROOT = pathlib.Path(__file__).parent.parent
MODULES = (
    "keras_vid",
    "keras_vid.callbacks",
    "keras_vid.experiments.models",
    "keras_vid.experiments.data",
)


def public_symbols(module_name):
    """`(name, object)` for every entry of the module's `__all__`, in order."""
    module = importlib.import_module(module_name)
    return [(name, getattr(module, name)) for name in module.__all__]


SYMBOLS = [
    (module, name, obj)
    for module in MODULES
    for name, obj in public_symbols(module)
    if inspect.isclass(obj) or inspect.isfunction(obj)
]


def _has_parameters(obj):
    try:
        parameters = inspect.signature(obj).parameters
    except (TypeError, ValueError):
        return False
    return any(p not in ("self", "args", "kwargs") for p in parameters)


@pytest.mark.parametrize("module,name,obj", SYMBOLS, ids=[f"{m}.{n}" for m, n, _ in SYMBOLS])
def test_public_symbol_has_arguments_and_an_example(module, name, obj):
    doc = inspect.getdoc(obj) or ""
    assert doc, f"{module}.{name} has no docstring"
    assert "Example" in doc and "```python" in doc, f"{module}.{name}: no example"
    if _has_parameters(obj):
        assert "Args:" in doc, f"{module}.{name}: arguments are not documented"


def test_every_public_symbol_is_on_a_reference_page():
    pages = "".join(p.read_text() for p in (ROOT / "docs" / "reference").glob("*.md"))
    missing = [
        f"{module}.{name}"
        for module in MODULES
        for name, _ in public_symbols(module)
        if name != "__version__"
        and f"::: {module}.{name}" not in pages
        and f"::: keras_vid.{name}\n" not in pages  # re-exported at the top level
        and not (f"::: {module}\n" in pages and name in pages)
    ]
    assert not missing, f"not in docs/reference/*.md: {missing}"
