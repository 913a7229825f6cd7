"""`suggest_pairs` on WRNs, plain CNNs, an MLP student and nested backbones."""

import keras
import numpy as np
import pytest
from conftest import small_cnn, to_numpy

from keras_vid import VIDDistiller
from keras_vid.experiments.models import mlp, wide_resnet
from keras_vid.pair_suggestion import model_stages, resolve_pairs, suggest_pairs


def test_wrn_16_2_to_16_1_pairs_the_group_outputs():
    keras.utils.set_random_seed(0)
    teacher = wide_resnet(16, 2, 10, (8, 8, 3))
    student = wide_resnet(16, 1, 10, (8, 8, 3))
    pairs = suggest_pairs(teacher, student)
    assert pairs == [("group1", "group1"), ("group2", "group2"), ("group3", "group3")]
    # Three 1×1 convolutions C_s → C_t → C_t → C_t, plus one α per teacher channel.
    expected = [c * 2 * c + 2 * (2 * c) ** 2 + 2 * c for c in (16, 32, 64)]
    assert [d.head_params for d in pairs.details] == expected == [2592, 10304, 41088]
    with_lp = suggest_pairs(teacher, student, logits=True)
    assert with_lp[:3] == pairs and with_lp[3] == ("pool", "logits")
    assert with_lp.details[3].head_params == 64 * 10 + 10 + 10
    assert [s.path for s in model_stages(teacher)] == [
        "group1",
        "group2",
        "group3",
        "pool",
        "logits",
    ]


def test_plain_cnns_and_the_table():
    keras.utils.set_random_seed(0)
    pairs = suggest_pairs(small_cnn("t", 8), small_cnn("s", 4))
    assert pairs == [("s_g1", "t_g1"), ("s_g2", "t_g2")]
    printed = []
    pairs.print_table(printed.append)
    (table,) = printed
    assert table == pairs.table()
    lines = table.splitlines()
    assert len(lines) == 4
    assert lines[2].split() == [
        "0",
        "s_g1",
        "(None,",
        "8,",
        "8,",
        "4)",
        "t_g1",
        "(None,",
        "8,",
        "8,",
        "8)",
        "8×8",
        "stage",
        "end",
        "168",
    ]


def test_dropout_at_a_stage_end_is_skipped_and_unmatched_stages_are_left_out():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="c1")(inputs)
    x = keras.layers.ReLU(name="r1")(x)
    x = keras.layers.Dropout(0.2, name="drop1")(x)
    x = keras.layers.MaxPooling2D(name="p1")(x)
    x = keras.layers.Conv2D(4, 3, padding="same", name="c2")(x)
    x = keras.layers.MaxPooling2D(name="p2")(x)  # a 2×2 stage the teacher lacks
    x = keras.layers.Conv2D(4, 1, name="c3")(x)
    x = keras.layers.Flatten(name="flat")(x)
    outputs = keras.layers.Dense(5, name="logits")(x)
    student = keras.Model(inputs, outputs)
    stages = [(s.path, s.kind) for s in model_stages(student)]
    assert stages == [
        ("r1", "map"),
        ("c2", "map"),
        ("c3", "map"),
        ("flat", "vector"),
        ("logits", "logits"),
    ]
    pairs = suggest_pairs(small_cnn("t", 8), student, logits=True)
    assert pairs == [("r1", "t_g1"), ("c2", "t_g2"), ("flat", "t_logits")]


def test_cnn_teacher_and_mlp_student_get_the_vector_pair():
    teacher = small_cnn("t", 8)
    student = mlp((16, 8), 5, (8, 8, 3))
    pairs = suggest_pairs(teacher, student)
    assert pairs == [("hidden2", "t_logits")]
    assert pairs.details[0].reason.startswith("VID-LP")
    assert pairs.details[0].head_params == 8 * 5 + 5 + 5
    with pytest.raises(ValueError, match=r"No pair to suggest.*logits=False.*Teacher stages"):
        suggest_pairs(teacher, student, logits=False)


def resnet_backbone(width, name="backbone"):
    """A KerasHub-style ResNet-v1 backbone on images of any size: stem, then
    stages `conv2` (stride 1) and `conv3` (stride 2) of two blocks, each
    block ending in `conv<s>_block<b>_out` (ReLU after the `Add`)."""
    inputs = keras.Input((None, None, 3), name="images")
    x = keras.layers.Conv2D(width, 3, padding="same", name="stem_conv")(inputs)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
    for stage, stride in ((2, 1), (3, 2)):
        channels = width * (stage - 1)
        for block in (1, 2):
            prefix = f"conv{stage}_block{block}"
            s = stride if block == 1 else 1
            shortcut = x
            if s != 1 or x.shape[-1] != channels:
                shortcut = keras.layers.Conv2D(channels, 1, strides=s, name=f"{prefix}_0_conv")(x)
            y = keras.layers.Conv2D(
                channels, 3, strides=s, padding="same", name=f"{prefix}_1_conv"
            )(x)
            y = keras.layers.ReLU(name=f"{prefix}_1_relu")(y)
            y = keras.layers.Conv2D(channels, 3, padding="same", name=f"{prefix}_2_conv")(y)
            x = keras.layers.Add(name=f"{prefix}_add")([shortcut, y])
            x = keras.layers.ReLU(name=f"{prefix}_out")(x)
    return keras.Model(inputs, x, name=name)


def image_classifier(width, name):
    inputs = keras.Input((8, 8, 3))
    x = resnet_backbone(width)(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="pooler")(x)
    outputs = keras.layers.Dense(5, name="predictions")(x)
    return keras.Model(inputs, outputs, name=name)


def test_nested_backbones_give_path_pairs_that_the_distiller_accepts():
    keras.utils.set_random_seed(0)
    teacher, student = image_classifier(8, "teacher"), image_classifier(4, "student")
    pairs = suggest_pairs(teacher, student, logits=True)
    assert pairs == [
        ("backbone/conv2_block2_out", "backbone/conv2_block2_out"),
        ("backbone/conv3_block2_out", "backbone/conv3_block2_out"),
        ("pooler", "predictions"),
    ]
    # The backbone alone has unknown image sizes; inside the classifier they are known.
    assert pairs.details[1].teacher.shape == (None, 4, 4, 16)
    distiller = VIDDistiller(teacher, student, pairs=resolve_pairs(teacher, student, pairs))
    x = np.random.default_rng(0).random((2, 8, 8, 3)).astype("float32")
    out = distiller.teacher_extractor(x, training=False)
    np.testing.assert_allclose(to_numpy(out["logits"]), to_numpy(teacher(x)), atol=1e-5)
    assert out["pair_1"].shape == (2, 4, 4, 16)


def test_unknown_image_size_is_a_clear_error():
    with pytest.raises(ValueError, match=r"teacher model 'backbone'.*unknown spatial.*fixed"):
        suggest_pairs(resnet_backbone(4), small_cnn("s", 4))


def test_resolve_pairs():
    teacher, student = small_cnn("t", 8), small_cnn("s", 4)
    given = [("s_pool", "t_logits")]
    assert resolve_pairs(teacher, student, given) is given
    auto = resolve_pairs(teacher, student, "auto", logits=True)
    assert auto == [("s_g1", "t_g1"), ("s_g2", "t_g2"), ("s_pool", "t_logits")]
    with pytest.raises(ValueError, match="`logits` must be"):
        suggest_pairs(teacher, student, logits="yes")


def test_pre_activation_reads_each_stage_before_its_final_activation():
    keras.utils.set_random_seed(0)
    teacher, student = small_cnn("t", 8), small_cnn("s", 4)
    pairs = suggest_pairs(teacher, student, feature_point="pre-activation")
    assert pairs == [("s_bn1", "t_bn1"), ("s_bn2", "t_bn2")]
    # The pre-activation feature is the stage output's input, and it has negatives.
    assert teacher.get_layer("t_g1").input is teacher.get_layer("t_bn1").output
    # Post-activation ResNets: the `Add` before the block's ReLU, inside the backbone.
    nested = suggest_pairs(
        image_classifier(8, "teacher"),
        image_classifier(4, "student"),
        feature_point="pre-activation",
    )
    assert nested == [
        ("backbone/conv2_block2_add", "backbone/conv2_block2_add"),
        ("backbone/conv3_block2_add", "backbone/conv3_block2_add"),
    ]
    # A pre-activation WRN's group outputs are the residual stream already.
    wrn_t, wrn_s = wide_resnet(10, 2, 10, (8, 8, 3)), wide_resnet(10, 1, 10, (8, 8, 3))
    assert suggest_pairs(wrn_t, wrn_s, feature_point="pre-activation") == suggest_pairs(
        wrn_t, wrn_s, feature_point="output"
    )
    with pytest.raises(ValueError, match="`feature_point` must be one of"):
        suggest_pairs(teacher, student, feature_point="before")


@keras.saving.register_keras_serializable(package="keras_vid_tests")
class ResidualBlock(keras.layers.Layer):
    """A transformer-like block: a layer made of layers, (batch, tokens, dim) in and out."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.norm = keras.layers.LayerNormalization()
        self.mlp = keras.layers.Dense(1)

    def build(self, input_shape):
        self.norm.build(input_shape)
        self.mlp = keras.layers.Dense(input_shape[-1])
        self.mlp.build(input_shape)

    def call(self, x):
        return x + self.mlp(self.norm(x))


def token_model(name, blocks, dim):
    tokens = keras.Input((None,), dtype="int32")
    x = keras.layers.Embedding(20, dim, name=f"{name}_embedding")(tokens)
    x = keras.layers.LayerNormalization(name=f"{name}_embedding_norm")(x)
    x = keras.layers.Dropout(0.1, name=f"{name}_embedding_dropout")(x)
    for i in range(blocks):
        x = ResidualBlock(name=f"{name}_block{i}")(x)
    x = keras.layers.GlobalAveragePooling1D(name=f"{name}_pool")(x)
    return keras.Model(tokens, keras.layers.Dense(3, name=f"{name}_logits")(x), name=name)


@pytest.mark.parametrize(
    "teacher_blocks, student_blocks, mapped",
    [(4, 2, [2, 4]), (4, 3, [1, 3, 4]), (6, 1, [6]), (2, 4, [1, 1, 2, 2])],
)
def test_transformer_stacks_are_paired_uniformly_with_the_embeddings(
    teacher_blocks, student_blocks, mapped
):
    teacher = token_model("t", teacher_blocks, 8)
    student = token_model("s", student_blocks, 4)
    pairs = suggest_pairs(teacher, student)
    assert pairs == [("s_embedding_norm", "t_embedding_norm")] + [
        (f"s_block{m}", f"t_block{n - 1}") for m, n in enumerate(mapped)
    ]
    assert [s.kind for s in model_stages(teacher)] == (
        ["embeddings"] + ["block"] * teacher_blocks + ["vector", "logits"]
    )
    assert (
        pairs.details[1].reason
        == f"block 1/{student_blocks} ↔ {mapped[0]}/{teacher_blocks} (uniform)"
    )


def test_a_distiller_with_auto_pairs_on_token_models_trains():
    keras.utils.set_random_seed(0)
    teacher, student = token_model("t", 4, 8), token_model("s", 2, 4)
    distiller = VIDDistiller(teacher, student, pairs="auto")
    assert distiller.pairs == [
        ("s_embedding_norm", "t_embedding_norm"),
        ("s_block0", "t_block1"),
        ("s_block1", "t_block3"),
    ]
    distiller.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    x = np.random.default_rng(0).integers(0, 20, size=(4, 6)).astype("int32")
    logs = distiller.train_on_batch(x, np.arange(4) % 3, return_dict=True)
    assert all(np.isfinite(logs[f"vid_{i}"]) for i in range(3))
