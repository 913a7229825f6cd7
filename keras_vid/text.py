"""Plain-text rendering shared by the summaries: shapes and aligned tables."""


def shape_text(shape):
    """`(None, 8, 8, 16)` for a shape with an unknown batch axis."""
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ")"


def text_table(header, rows, rule_columns=None):
    """Left-aligned columns, two spaces apart, a rule under the header.

    `rule_columns` limits the rule to the first columns (default: all).
    """
    rows = [tuple(str(cell) for cell in row) for row in rows]
    header = tuple(str(cell) for cell in header)
    widths = [max(len(row[i]) for row in [header] + rows) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()
        for row in [header] + rows
    ]
    lines.insert(1, "  ".join("-" * width for width in widths[:rule_columns]))
    return "\n".join(lines)
