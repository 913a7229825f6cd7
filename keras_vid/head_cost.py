"""What the VID heads of a distiller cost next to the student.

Each head trains a regressor μ(s) alongside the student; with wide teacher
layers (or a vector student regressed onto a teacher map) a head can hold
more parameters, or cost more MACs per example, than the student itself.
`head_cost_summary` lists both for every head and flags such heads.
"""

import dataclasses

from keras_vid.flops import head_macs, model_macs, uncounted_layers
from keras_vid.text import text_table


@dataclasses.dataclass
class HeadCost:
    """Cost of one head: its pair, parameters and forward MACs per example
    (`None` when unknown), and whether it is bigger than the student."""

    index: int
    name: str
    student_layer: str
    teacher_layer: str
    params: int
    macs: int | None
    bigger_than_student: bool


@dataclasses.dataclass
class HeadCostSummary:
    """Rows of `head_cost_summary`; `str()` gives the table."""

    heads: list
    student_params: int
    student_macs: int
    uncounted: list = dataclasses.field(default_factory=list)

    @property
    def total_params(self):
        return sum(head.params for head in self.heads)

    @property
    def total_macs(self):
        return sum(head.macs or 0 for head in self.heads)

    @property
    def oversized(self):
        """The heads with more parameters or MACs than the student."""
        return [head for head in self.heads if head.bigger_than_student]

    def __str__(self):
        def fmt(value):
            return "n/a" if value is None else f"{value:,}"

        header = ("head", "student layer", "teacher layer", "params", "MACs/example", "")
        rows = [
            (
                head.name,
                head.student_layer,
                head.teacher_layer,
                fmt(head.params),
                fmt(head.macs),
                "> student" if head.bigger_than_student else "",
            )
            for head in self.heads
        ]
        rows.append(("all heads", "", "", fmt(self.total_params), fmt(self.total_macs), ""))
        rows.append(("student", "", "", fmt(self.student_params), fmt(self.student_macs), ""))
        lines = [text_table(header, rows, rule_columns=len(header) - 1)]
        if self.uncounted:
            names = ", ".join(self.uncounted[:5]) + (", ..." if len(self.uncounted) > 5 else "")
            lines.append(
                f"The student's MACs leave out {len(self.uncounted)} layer(s) of unknown "
                f"cost ({names}): heads are compared with it by parameters only."
            )
        if self.oversized:
            lines.append(
                f"{len(self.oversized)} head(s) cost more than the student: consider a "
                "narrower `hidden_width`, a smaller `depth`, or another layer pair."
            )
        return "\n".join(lines)


def head_cost_summary(distiller, print_fn=print):
    """Parameters and forward MACs of each head of `distiller`, next to the student's.

    MACs are per example for the forward pass (see `keras_vid.flops`:
    convolution, Dense, EinsumDense and attention layers count; the
    student's layers of unknown cost, such as custom transformer blocks,
    are listed in `uncounted` and the heads are then compared with the
    student by parameters only; the adaptive pooling a head uses
    when the two maps differ in size, and its Gaussian NLL, count 0). A
    head is flagged when its parameters or its MACs exceed the student's.
    Custom heads (`VIDDistiller(heads=...)`) without a `regressor` get
    their parameters counted and MACs `None`.

    Args:
        distiller: a `VIDDistiller`.
        print_fn: called with the table; `None` prints nothing.

    Returns:
        A `HeadCostSummary`.

    Example:

    ```python
    summary = keras_vid.head_cost_summary(distiller)
    assert not summary.oversized
    ```
    """
    student_params = distiller.student.count_params()
    student_macs = model_macs(distiller.student)
    uncounted = uncounted_layers(distiller.student)
    heads = []
    for index, (head, (s_name, t_name)) in enumerate(zip(distiller.heads, distiller.pairs)):
        params = head.count_params()
        macs = head_macs(head)
        heads.append(
            HeadCost(
                index=index,
                name=head.name,
                student_layer=s_name,
                teacher_layer=t_name,
                params=params,
                macs=macs,
                bigger_than_student=params > student_params
                or (not uncounted and macs is not None and macs > student_macs),
            )
        )
    summary = HeadCostSummary(heads, student_params, student_macs, uncounted)
    if print_fn is not None:
        print_fn(str(summary))
    return summary
