"""Which teacher channels each VID head gave up on, as numbers and as a picture.

A `VIDHead` scores teacher channel `c` with a Gaussian of learned variance
σ_c². The student's gradient from that channel is scaled by 1/σ_c², so a
channel with a large σ_c² barely steers the student.

**Ignored channel.** Channel `c` of a pair is *ignored* when

    σ_c² ≥ threshold · reference_c        (threshold = 1 by default)

where `reference_c` is the variance of the teacher channel itself (over the
examples and positions of `x`, as the head scores it: after pooling to the
common size). With the default threshold this says the head expects its
prediction μ(s) to miss the channel by at least as much as the channel
varies, i.e. no better than predicting the channel's mean: the student
learns nothing about that channel. Without data (`x=None` and no
`teacher_variance`) the reference is the head's initial σ², `init_variance`,
and an ignored channel is one whose σ² did not shrink below it. A constant
teacher channel (variance 0, e.g. a dead ReLU) always counts as ignored:
there is nothing in it to learn.

σ² moves at the optimizer's pace, so early in training (or with a large
`init_variance`) channels can look ignored only because σ² has not come
down yet; watch it settle with `keras_vid.callbacks.VarianceMonitor`.
"""

import collections

import keras
import numpy as np

from keras_vid.features import pair_key

PairVariance = collections.namedtuple("PairVariance", ["variance", "reference", "ignored"])
PairVariance.__doc__ = """The learned variance of one pair.

Fields:
    variance: σ² per teacher channel, float64 array of shape `(channels,)`.
    reference: the per-channel reference σ² is compared with (the teacher
        channel's variance, or the head's `init_variance`), same shape.
    ignored: sorted indices of the ignored channels,
        `np.flatnonzero(variance >= threshold * reference)`.
"""


def _heads_of(source):
    heads = getattr(source, "heads", None)
    if heads is None:
        if not isinstance(source, (list, tuple)):
            raise ValueError(
                f"`source` must be a VIDDistiller or a list of VIDHeads. Received: {source!r}"
            )
        heads = list(source)
    for k, head in enumerate(heads):
        if not hasattr(head, "variance"):
            raise ValueError(
                f"`source`: the head of pair {k} ({head!r}) has no learned `variance`; "
                "only VIDHead-like heads can be summarised."
            )
    return heads


def _teacher_variances(source, heads, x, batch_size):
    extractor = getattr(source, "teacher_extractor", None)
    if extractor is None:
        raise ValueError(
            "`x` needs a VIDDistiller as `source` (to run its teacher); "
            "with a list of heads pass `teacher_variance` instead."
        )
    features = extractor.predict(x, batch_size=batch_size, verbose=0)
    variances = []
    for k, head in enumerate(heads):
        target = keras.ops.convert_to_numpy(head.target(features[pair_key(k)]))
        target = np.asarray(target, dtype="float64")
        variances.append(target.reshape(-1, target.shape[-1]).var(axis=0))
    return variances


def variance_summary(source, x=None, teacher_variance=None, threshold=1.0, batch_size=256):
    """The learned σ² of each pair and the channels the student ignores.

    See the module docstring for the definition of an ignored channel.

    Args:
        source: a `VIDDistiller` or a list of `VIDHead`s.
        x: teacher inputs to measure each teacher channel's variance on
            (needs a `VIDDistiller`). Pass `x` or `teacher_variance`, not
            both; with neither the reference is the initial σ².
        teacher_variance: one array of per-channel teacher variances per pair.
        threshold: a channel is ignored when σ² ≥ `threshold` · reference;
            a number > 0.
        batch_size: batch size for running the teacher on `x`.

    Returns:
        A list with one `PairVariance(variance, reference, ignored)` per pair.

    Example:

    ```python
    for k, pair in enumerate(variance_summary(distiller, x=x_train)):
        print(k, len(pair.ignored), "of", len(pair.variance), "channels ignored")
    ```
    """
    heads = _heads_of(source)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not threshold > 0:
        raise ValueError(f"`threshold` must be a number > 0. Received: threshold={threshold!r}")
    if x is not None and teacher_variance is not None:
        raise ValueError("Pass either `x` or `teacher_variance`, not both.")
    variances = [
        np.asarray(keras.ops.convert_to_numpy(head.variance), dtype="float64") for head in heads
    ]
    if x is not None:
        references = _teacher_variances(source, heads, x, batch_size)
    elif teacher_variance is not None:
        if not isinstance(teacher_variance, (list, tuple)) or len(teacher_variance) != len(heads):
            raise ValueError(
                f"`teacher_variance` must be a list with one array per pair ({len(heads)}). "
                f"Received: {teacher_variance!r}"
            )
        references = []
        for k, (ref, var) in enumerate(zip(teacher_variance, variances)):
            ref = np.asarray(ref, dtype="float64")
            if ref.shape != var.shape:
                raise ValueError(
                    f"`teacher_variance[{k}]` has shape {ref.shape} but pair {k} has "
                    f"{var.shape[0]} channels."
                )
            references.append(ref)
    else:
        references = []
        for k, head in enumerate(heads):
            init = getattr(head, "init_variance", None)
            if init is None:
                raise ValueError(
                    f"The head of pair {k} has no `init_variance`: pass `x` or "
                    "`teacher_variance` as the reference."
                )
            references.append(np.full_like(variances[k], float(init)))
    return [
        PairVariance(var, ref, np.flatnonzero(var >= threshold * ref))
        for var, ref in zip(variances, references)
    ]


def plot_variance(
    source, path, x=None, teacher_variance=None, threshold=1.0, pair_names=None, batch_size=256
):
    """Plots each pair's learned σ² per channel, sorted, to a PNG file.

    One panel per pair: the channels' σ² in increasing order (log scale),
    ignored channels in red, and each channel's reference (the teacher
    channel's variance, or the initial σ²) as a black tick, scaled by
    `threshold`. Uses matplotlib's Agg canvas without touching pyplot's
    global state.

    Args:
        source: a `VIDDistiller` or a list of heads, as in `variance_summary`.
        path: the PNG file to write (parent folders are created).
        x: inputs to measure the teacher channels' variances on, as in
            `variance_summary`.
        teacher_variance: instead of `x`, one array per pair, as in
            `variance_summary`.
        threshold: the ignored-channel threshold, as in `variance_summary`.
        pair_names: optional panel titles, one per pair; default
            `"student → teacher"` layer names for a `VIDDistiller`.
        batch_size: the batch size of the teacher's pass over `x`.

    Returns:
        The `variance_summary` list, so the ignored channels can be checked.

    Example:

    ```python
    summary = plot_variance(distiller, "variance.png", x=x_train)
    [len(pair.ignored) for pair in summary]
    ```
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError(
            "plot_variance needs matplotlib: `pip install matplotlib` "
            "(or `pip install keras-vid[examples]`)."
        ) from error
    import pathlib

    summary = variance_summary(
        source, x=x, teacher_variance=teacher_variance, threshold=threshold, batch_size=batch_size
    )
    if pair_names is None:
        pairs = getattr(source, "pairs", None)
        pair_names = (
            [f"{s} → {t}" for s, t in pairs]
            if pairs
            else [f"pair {k}" for k in range(len(summary))]
        )
    elif len(pair_names) != len(summary):
        raise ValueError(
            f"`pair_names` has {len(pair_names)} entries but there are {len(summary)} pairs."
        )
    reference_name = (
        "teacher channel variance"
        if x is not None or teacher_variance is not None
        else "initial σ²"
    )

    columns = min(len(summary), 4)
    rows = -(-len(summary) // columns)
    figure = Figure(figsize=(3.6 * columns, 3.0 * rows), layout="constrained")
    FigureCanvasAgg(figure)
    for k, (pair, name) in enumerate(zip(summary, pair_names)):
        axes = figure.add_subplot(rows, columns, k + 1)
        order = np.argsort(pair.variance, kind="stable")
        ignored = np.isin(order, pair.ignored)
        positions = np.arange(len(order))
        colors = np.where(ignored, "tab:red", "tab:blue")
        axes.bar(positions, pair.variance[order], width=1.0, color=colors, linewidth=0)
        axes.scatter(
            positions,
            threshold * pair.reference[order],
            marker="_",
            color="black",
            s=30,
            label=f"{threshold:g} × {reference_name}",
        )
        axes.set_yscale("log")
        axes.set_title(f"{name}\n{len(pair.ignored)}/{len(order)} ignored", fontsize=9)
        axes.set_xlabel("channel (sorted by σ²)", fontsize=8)
        if k % columns == 0:
            axes.set_ylabel("learned σ²", fontsize=8)
        axes.tick_params(labelsize=7)
        if k == 0:
            axes.legend(fontsize=7, loc="upper left")
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    return summary
