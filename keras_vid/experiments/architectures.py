"""Architectures by name, with the layer names each distillation method pairs.

Names: `wrn-<depth>-<width>` (the paper's Wide ResNets), `cnn-<c1>,<c2>,...`
(`small_cnn`, optionally `cnn-<c1>,<c2>,...x<convs per stage>`),
`mlp-<u1>,<u2>,...` and `airbench-<w1>,<w2>,...` or `airbench-res-<w1>,...`
(a teacher trained by `keras_vid.experiments.fast_teacher`, the residual one
by `--recipe airbench96`, given with `--teacher-model`).
"""

import dataclasses

from keras_vid.experiments.models import cnn_block_names, mlp, small_cnn, wide_resnet
from keras_vid.experiments.models.airbench import airbench_block_names
from keras_vid.experiments.models.wide_resnet import GROUP_OUTPUTS


@dataclasses.dataclass
class Architecture:
    """A buildable model with the layers that distillation pairs.

    Attributes:
        name: the spec it was parsed from.
        build: `build(num_classes, input_shape, name)` → `keras.Model`.
        stages: the ends of the feature stages (VID-I and AT pairs); empty
            for an MLP.
        pre_activation_stages: the same features before their last
            activation (a CNN's last BatchNormalization of each stage; a
            pre-activation WRN's group outputs already are); empty where the
            model has none (an MLP's Dense layers fuse their ReLU).
        hidden: the hidden vectors of an MLP (CNN → MLP pairs).
        penultimate: the vector before the logits (VID-LP).
        raw_input: the saved model reads raw RGB (0–255) and normalises it
            itself (an airbench teacher); the CLI adapts it to its
            normalised images (`reading_normalised_input`).
    """

    name: str
    build: object
    stages: tuple = ()
    pre_activation_stages: tuple = ()
    hidden: tuple = ()
    penultimate: str = "pool"
    logits: str = "logits"
    raw_input: bool = False


def _ints(text, spec):
    try:
        return tuple(int(v) for v in text.split(",") if v)
    except ValueError:
        raise ValueError(f"Cannot parse architecture {spec!r}.") from None


def parse_architecture(spec):
    """An `Architecture` from a name such as `"wrn-16-1"`, `"cnn-16,32,64"`, `"mlp-512"`."""
    kind, _, rest = spec.partition("-")
    kind = kind.lower()
    if kind == "wrn":
        try:
            depth, width = (int(v) for v in rest.split("-"))
        except ValueError:
            raise ValueError(f"WRN names are wrn-<depth>-<width>. Received: {spec!r}") from None

        def build(num_classes, input_shape, name=None):
            return wide_resnet(depth, width, num_classes, input_shape, name=name)

        return Architecture(spec, build, stages=GROUP_OUTPUTS, pre_activation_stages=GROUP_OUTPUTS)
    if kind == "cnn":
        channels, _, convs = rest.partition("x")
        filters = _ints(channels, spec)
        convs = int(convs) if convs else 1
        if not filters:
            raise ValueError(f"CNN names are cnn-<c1>,<c2>,...[x<convs>]. Received: {spec!r}")

        def build(num_classes, input_shape, name=None):
            return small_cnn(filters, convs, num_classes, input_shape, name=name)

        return Architecture(
            spec,
            build,
            stages=cnn_block_names(filters),
            pre_activation_stages=cnn_block_names(filters, convs, pre_activation=True),
        )
    if kind == "mlp":
        units = _ints(rest, spec)
        if not units:
            raise ValueError(f"MLP names are mlp-<u1>,<u2>,... Received: {spec!r}")

        def build(num_classes, input_shape, name=None):
            return mlp(units, num_classes, input_shape, name=name)

        hidden = tuple(f"hidden{i}" for i in range(1, len(units) + 1))
        return Architecture(spec, build, hidden=hidden, penultimate=hidden[-1])
    if kind == "airbench":
        residual = rest.startswith("res-")
        widths = _ints(rest.removeprefix("res-"), spec)
        if not widths:
            raise ValueError(
                "airbench names are airbench-<w1>,<w2>,... or airbench-res-<w1>,<w2>,... "
                f"Received: {spec!r}"
            )

        def build(num_classes, input_shape, name=None):
            recipe = " --recipe airbench96" if residual else ""
            raise ValueError(
                f"{spec!r} is trained by its own recipe: run `python -m "
                f"keras_vid.experiments.fast_teacher{recipe} --widths "
                f"{','.join(map(str, widths))} --output T.keras`, then pass "
                "`--teacher-model T.keras`."
            )

        groups = len(widths)
        return Architecture(
            spec,
            build,
            stages=airbench_block_names(groups),
            pre_activation_stages=airbench_block_names(groups, True, residual),
            raw_input=True,
        )
    raise ValueError(
        f"Unknown architecture {spec!r}: use wrn-D-W, cnn-C1,C2,..., mlp-U1,..., "
        "airbench-W1,W2,... or airbench-res-W1,W2,..."
    )
