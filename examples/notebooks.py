"""The examples as notebooks: keras.io's script-with-markdown convention, both ways.

A script is a notebook written as Python: each top-level triple-quoted string
(the module docstring included) is a Markdown cell, and the code between two
of them is a code cell. The script's last lines, `if __name__ == "__main__":`
then `main()`, are the notebook's last cell, `main([])` (the script's
defaults; a notebook has no command line). `notebook_to_script` inverts
`script_to_notebook` exactly, so the scripts stay the source of truth.

    python examples/notebooks.py            # write examples/notebooks/*.ipynb
    python examples/notebooks.py --check    # exit 1 if a notebook is stale
"""

import argparse
import ast
import pathlib
import sys

import nbformat

EXAMPLES = pathlib.Path(__file__).resolve().parent
NOTEBOOKS = EXAMPLES / "notebooks"
SCRIPTS = ("quickstart.py", "distil_transformer.py")
MAIN_GUARD = 'if __name__ == "__main__":\n    main()'
NOTEBOOK_MAIN = "main([])  # the script's defaults (see `main`'s arguments)"


def _markdown_nodes(source):
    """The top-level string statements of `source`: `(first_line, last_line, text)`."""
    nodes = []
    for node in ast.parse(source).body:
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            if isinstance(node.value.value, str):
                nodes.append((node.lineno, node.end_lineno, node.value.value))
    return nodes


def script_to_notebook(source):
    """A notebook (nbformat v4) of a script in the convention above."""
    lines = source.splitlines()
    cells, cursor = [], 0

    def code(first, last):
        text = "\n".join(lines[first:last]).strip("\n")
        guarded = text.endswith(MAIN_GUARD)
        text = text.removesuffix(MAIN_GUARD).strip("\n")
        if text:
            cells.append(nbformat.v4.new_code_cell(text))
        if guarded:  # its own cell, which runs the script's defaults
            cells.append(nbformat.v4.new_code_cell(NOTEBOOK_MAIN))

    for first, last, text in _markdown_nodes(source):
        code(cursor, first - 1)
        cells.append(nbformat.v4.new_markdown_cell(text.strip("\n")))
        cursor = last
    code(cursor, len(lines))
    notebook = nbformat.v4.new_notebook(cells=cells)
    notebook.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    for index, cell in enumerate(notebook.cells):
        cell["id"] = f"cell-{index}"  # stable ids: the committed file does not churn
    return notebook


def notebook_to_script(notebook):
    """The script of a notebook written by `script_to_notebook`."""
    parts = []
    for cell in notebook.cells:
        if cell.cell_type == "markdown":
            parts.append(f'"""\n{cell.source}\n"""')
        elif cell.source == NOTEBOOK_MAIN:
            parts.append(MAIN_GUARD)
        else:
            parts.append(cell.source)
    if not parts or not parts[0].startswith('"""\n'):
        return "\n\n\n".join(parts) + "\n"
    # The module docstring opens on its first line and is followed by one blank line.
    docstring = '"""' + parts[0][4:]
    return docstring + "\n\n" + "\n\n\n".join(parts[1:]) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a notebook is stale")
    args = parser.parse_args(argv)
    NOTEBOOKS.mkdir(exist_ok=True)
    stale = []
    for name in SCRIPTS:
        text = nbformat.writes(script_to_notebook((EXAMPLES / name).read_text())) + "\n"
        path = NOTEBOOKS / name.replace(".py", ".ipynb")
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path))
        else:
            path.write_text(text)
            print(f"wrote {path}")
    if stale:
        print(f"stale: {stale}; run `python examples/notebooks.py`")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
