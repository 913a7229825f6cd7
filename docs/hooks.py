"""MkDocs hooks: results and benchmarks pages read the repository's own files.

- `<!-- include: path/from/repo/root.md -->` on a line of its own inlines that
  file (its tables stay in one place: the file its command writes), with its
  relative links rebased onto the page.
- A relative link to a repository file outside `docs/` (a results table, an
  example script) becomes that path in code, since the site only holds
  `docs/`. A relative link to nothing fails the build, like a broken link
  between pages does in strict mode.
"""

import os
import pathlib
import re

from mkdocs.exceptions import PluginError

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
INCLUDE = re.compile(r"(?m)^<!-- include: (\S+) -->$")
LINK = re.compile(r"(!?)\[([^\]]*)\]\(([^)\s]+)\)")


def _rebase(text, source_dir, page_dir):
    """Relative link targets of `text`, written from `source_dir`, made
    relative to `page_dir`."""

    def fix(match):
        bang, label, target = match.groups()
        if re.match(r"^[a-z]+:|^#|^/", target):
            return match.group(0)
        path, _, anchor = target.partition("#")
        absolute = (source_dir / path).resolve()
        relative = pathlib.Path(_relpath(absolute, page_dir))
        return f"{bang}[{label}]({relative.as_posix()}{'#' + anchor if anchor else ''})"

    return LINK.sub(fix, text)


def _relpath(path, start):
    return os.path.relpath(path, start)


def _outside_links(text, page_dir, page):
    def fix(match):
        bang, label, target = match.groups()
        if re.match(r"^[a-z]+:|^#|^/", target):
            return match.group(0)
        path = target.partition("#")[0]
        absolute = (page_dir / path).resolve()
        if not absolute.exists():
            raise PluginError(f"{page}: the link {target!r} points to nothing ({absolute})")
        if absolute.is_relative_to(DOCS):
            return match.group(0)
        shown = absolute.relative_to(ROOT).as_posix()
        if bang:  # the site holds docs/ only: name the figure's file
            return f"*{label}* (figure: `{shown}`)"
        return f"{label} (`{shown}`)" if label.strip("`") != shown else f"`{shown}`"

    return LINK.sub(fix, text)


def on_page_markdown(markdown, page, config, files):
    page_dir = (DOCS / page.file.src_uri).parent

    def include(match):
        source = ROOT / match.group(1)
        if not source.exists():
            raise PluginError(f"{page.file.src_uri}: cannot include {match.group(1)}")
        text = source.read_text()
        text = re.sub(r"(?m)^# .*\n", "", text, count=1)  # the page has its own title
        text = re.sub(r"(?m)^(#+) ", r"#\1 ", text)  # one level below the page's
        return _rebase(text, source.parent, page_dir)

    markdown = INCLUDE.sub(include, markdown)
    return _outside_links(markdown, page_dir, page.file.src_uri)
