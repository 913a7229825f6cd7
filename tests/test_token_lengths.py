"""Token pairs of different lengths (two ViTs with different patch sizes):
the longer patch sequence pooled to the shorter, class tokens kept apart."""

import keras
import numpy as np
import numpy_reference as ref
import pytest
from conftest import to_numpy, value_and_grad

from keras_vid import VIDDistiller, VIDHead
from keras_vid.token_pooling import TokenPooling


def tokens(seed, length, dim, batch=2):
    return np.random.default_rng(seed).normal(size=(batch, length, dim)).astype("float32")


def test_grid_pooling_averages_square_blocks_of_patches():
    # 1 class token + a 4×4 grid; token (1 + 4r + c) is patch (r, c).
    x = np.arange(17, dtype="float32")[None, :, None]
    pooled = to_numpy(TokenPooling(4, class_tokens=1, grid=True)(x))[0, :, 0]
    # Class token 0 in front, then the 2×2 blocks' means of patch ids 1..16.
    np.testing.assert_allclose(pooled, [0.0, 3.5, 5.5, 11.5, 13.5])
    runs = to_numpy(TokenPooling(4, class_tokens=1)(x))[0, :, 0]
    np.testing.assert_allclose(runs, [0.0, 2.5, 6.5, 10.5, 14.5])  # consecutive runs of 4
    dropped = to_numpy(TokenPooling(4, class_tokens=1, keep_class_tokens=False, grid=True)(x))
    np.testing.assert_allclose(dropped[0, :, 0], [3.5, 5.5, 11.5, 13.5])


@pytest.mark.parametrize(
    "options, target_length",
    [
        ({}, 5),  # every token pooled alike: 17 → 5
        ({"class_tokens": 1}, 5),  # class token paired, 16 patches → 4
        ({"class_tokens": 1, "token_grid": True}, 5),  # 4×4 grid → 2×2
        ({"class_tokens": 1, "drop_class_tokens": True, "token_grid": True}, 4),
    ],
)
def test_head_on_different_lengths_equals_numpy(options, target_length):
    keras.utils.set_random_seed(0)
    student, teacher = tokens(0, 5, 6), tokens(1, 17, 8)
    head = VIDHead(**options)
    got = to_numpy(head(student, teacher))
    assert head.target(teacher).shape == (2, target_length, 8)
    np.testing.assert_allclose(got, ref.head_nll(head, student, teacher), rtol=1e-5)


@pytest.mark.parametrize("drop", [True, False])
def test_dropped_class_tokens_get_no_gradient_and_paired_ones_do(drop):
    keras.utils.set_random_seed(0)
    student, teacher = tokens(0, 5, 6), tokens(1, 17, 8)
    head = VIDHead(class_tokens=1, drop_class_tokens=drop, token_grid=True)
    head(student, teacher)
    _, grad = value_and_grad(lambda s: keras.ops.sum(head(s, teacher)), student)
    grad = to_numpy(grad)
    assert np.all(grad[:, 0] == 0) == drop
    assert np.all(np.abs(grad[:, 1:]).sum(axis=-1) > 0)


def test_head_with_class_tokens_saves_and_loads(tmp_path):
    keras.utils.set_random_seed(0)
    student, teacher = tokens(0, 5, 6), tokens(1, 17, 8)
    head = VIDHead(class_tokens=1, token_grid=True, name="vit_pair")
    want = to_numpy(head(student, teacher))
    s_in, t_in = keras.Input((5, 6)), keras.Input((17, 8))
    model = keras.Model([s_in, t_in], head(s_in, t_in))
    path = tmp_path / "head.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.get_layer("vit_pair").token_grid is True
    np.testing.assert_allclose(to_numpy(loaded([student, teacher])), want, rtol=1e-6)


@pytest.mark.parametrize(
    "options, student_shape, teacher_shape, match",
    [
        ({"token_grid": True}, (None, 5, 6), (None, 16, 8), r"student's patch tokens.*5 is not"),
        ({"class_tokens": 1}, (None, None, 6), (None, 17, 8), r"tokens None, teacher tokens 17"),
        ({}, (None, None, 6), (None, 17, 8), r"student tokens None, teacher tokens 17"),
        ({"class_tokens": 2}, (None, 2, 6), (None, 17, 8), r"student feature has 2 tokens"),
    ],
)
def test_lengths_that_cannot_be_matched_are_clear_errors(
    options, student_shape, teacher_shape, match
):
    with pytest.raises(ValueError, match=match):
        VIDHead(**options).build(student_shape, teacher_shape)


@pytest.mark.parametrize(
    "options, match",
    [
        ({"class_tokens": -1}, r"integer ≥ 0. Received: class_tokens=-1"),
        ({"drop_class_tokens": True}, r"needs `class_tokens` ≥ 1"),
    ],
)
def test_bad_class_token_arguments_are_refused(options, match):
    with pytest.raises(ValueError, match=match):
        VIDHead(**options)


def tiny_vit(name, patch, dim, blocks):
    """A ViT on 16×16 images: patch embedding, a class token, residual MLP blocks."""
    images = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(dim, patch, strides=patch, name=f"{name}_patches")(images)
    x = keras.layers.Reshape(((16 // patch) ** 2, dim), name=f"{name}_flatten")(x)
    cls = keras.layers.Dense(dim, name=f"{name}_cls")(keras.layers.GlobalAveragePooling1D()(x))
    x = keras.layers.Concatenate(axis=1, name=f"{name}_tokens")(
        [keras.layers.Reshape((1, dim))(cls), x]
    )
    for i in range(blocks):
        h = keras.layers.Dense(dim, activation="relu", name=f"{name}_block{i}_mlp")(x)
        x = keras.layers.Add(name=f"{name}_block{i}")([x, h])
    logits = keras.layers.Dense(4, name=f"{name}_logits")(
        keras.layers.Lambda(lambda t: t[:, 0], output_shape=(dim,))(x)
    )
    return keras.Model(images, logits, name=name)


def test_distiller_pairs_vits_with_different_patch_sizes():
    keras.utils.set_random_seed(0)
    teacher, student = tiny_vit("t", 4, 8, 2), tiny_vit("s", 8, 4, 1)
    distiller = VIDDistiller(
        teacher,
        student,
        pairs=[("s_block0", "t_block1")],
        head_options={"class_tokens": 1, "token_grid": True},
    )
    distiller.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    x = np.random.default_rng(0).random((4, 16, 16, 3)).astype("float32")
    logs = distiller.train_on_batch(x, np.arange(4), return_dict=True)
    head = distiller.heads[0]
    # Teacher: 1 + 16 tokens (4×4 grid); student: 1 + 4 (2×2): pooled to 1 + 4.
    assert head.teacher_shape == (None, 17, 8) and head.student_shape == (None, 5, 4)
    assert head.teacher_pool.grid and head.student_pool is None
    assert np.isfinite(logs["vid_0"])
