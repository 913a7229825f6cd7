"""Documentation: every public symbol is documented, and docs/api.md is current."""

import importlib.util
import inspect
import pathlib

import pytest

ROOT = pathlib.Path(__file__).parent.parent


def _build_api():
    spec = importlib.util.spec_from_file_location("build_api", ROOT / "docs" / "build_api.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


BUILD_API = _build_api()
SYMBOLS = [
    (module, name, obj)
    for module in BUILD_API.MODULES
    for name, obj in BUILD_API.public_symbols(module)
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


def test_api_reference_is_current():
    assert (ROOT / "docs" / "api.md").read_text() == BUILD_API.render(), (
        "docs/api.md is stale: run `python docs/build_api.py`"
    )
