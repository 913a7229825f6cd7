"""The import graph of `keras_vid/`: no cycle between its modules (imports
inside functions count), and the core never imports the experiment harness.
Read from the source with `ast`, so it is the same on every backend."""

import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "keras_vid"
HARNESS = ("keras_vid.experiments",)  # with its data pipelines and model builders


def _module_name(path):
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules():
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _imports(path, modules):
    """The keras_vid modules `path` imports, anywhere in the file; the package
    `keras_vid` itself (its `__init__` only re-exports) is left out."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            if name in modules and name != "keras_vid":
                found.add(name)
    return found


def graph():
    modules = _modules()
    return {name: _imports(path, modules) - {name} for name, path in modules.items()}


def find_cycle(edges):
    """One cycle of the directed graph `edges` as a list of nodes, or `None`."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(edges):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_in_keras_vid():
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " → ".join(cycle)


def test_the_core_never_imports_the_experiment_harness():
    offending = {
        name: sorted(i for i in imports if i.startswith(HARNESS))
        for name, imports in graph().items()
        if name != "keras_vid" and not name.startswith(HARNESS)
    }
    offending = {k: v for k, v in offending.items() if v}
    assert not offending, offending


def test_no_core_module_is_over_400_lines():
    """The core stays readable module by module: a module that grows past
    400 lines has picked up a second job (split it along its seam)."""
    long = {
        name: n
        for name, path in _modules().items()
        if not name.startswith(HARNESS) and (n := len(path.read_text().splitlines())) > 400
    }
    assert not long, long
