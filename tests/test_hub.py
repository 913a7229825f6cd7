"""KerasHub models as teacher and student (issue 14): a tiny GPT-2 causal LM
built from a config with random weights (no preset, no download)."""

import keras
import numpy as np
import numpy_reference as ref
import pytest
from conftest import to_numpy, weights_of

from keras_vid import VIDDistiller, suggest_pairs

keras_hub = pytest.importorskip("keras_hub")

VOCAB, LENGTH = 50, 8
LENGTHS = [8, 5, 2, 1]
PAIRS = [("student_backbone/transformer_layer_0", "teacher_backbone/transformer_layer_1")]


def causal_lm(name, layers, hidden):
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=VOCAB,
        num_layers=layers,
        num_heads=2,
        hidden_dim=hidden,
        intermediate_dim=2 * hidden,
        max_sequence_length=16,
        name=f"{name}_backbone",
    )
    return keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None, name=name)


def batch(seed=0, padding_ids=None):
    """Right-padded token ids and their padding mask; `padding_ids` fills the
    padded positions (0 by default)."""
    rng = np.random.default_rng(seed)
    mask = np.arange(LENGTH)[None, :] < np.array(LENGTHS)[:, None]
    ids = rng.integers(1, VOCAB, size=mask.shape).astype("int32")
    ids[~mask] = 0 if padding_ids is None else padding_ids[~mask]
    return {"token_ids": ids, "padding_mask": mask}, mask


@pytest.fixture(scope="module")
def distiller():
    keras.utils.set_random_seed(0)
    distiller = VIDDistiller(causal_lm("teacher", 2, 16), causal_lm("student", 1, 8), pairs=PAIRS)
    distiller.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        kd_weight=1.0,
        temperature=2.0,
    )
    return distiller


def test_padding_mask_input_masks_the_token_pair_and_kd(distiller):
    assert distiller._mask_sources == {"pair_0": "input", "logits": "input"}
    x, mask = batch()
    logs = distiller.test_on_batch(x, x["token_ids"], return_dict=True)
    s = distiller.student_extractor.predict_on_batch(x)
    t = distiller.teacher_extractor.predict_on_batch(x)
    assert t["pair_0"].shape == (4, LENGTH, 16) and s["logits"].shape == (4, LENGTH, VOCAB)
    vid = [
        ref.head_nll(distiller.heads[0], s["pair_0"][i : i + 1, :n], t["pair_0"][i : i + 1, :n])[0]
        for i, n in enumerate(LENGTHS)
    ]
    kd = [
        ref.softened_kl(t["logits"][i, :n], s["logits"][i, :n], 2.0).mean()
        for i, n in enumerate(LENGTHS)
    ]
    assert logs["vid_0"] == pytest.approx(np.mean(vid), rel=1e-4)
    assert logs["kd_loss"] == pytest.approx(np.mean(kd), rel=1e-4)

    # Other ids at the padded positions change only padded features (causal
    # attention, right padding): the masked terms do not move.
    noise = np.random.default_rng(9).integers(1, VOCAB, size=mask.shape)
    other, _ = batch(padding_ids=noise)
    other_logs = distiller.test_on_batch(other, other["token_ids"], return_dict=True)
    other_t = distiller.teacher_extractor.predict_on_batch(other)
    assert not np.allclose(other_t["logits"][~mask], t["logits"][~mask])
    assert other_logs["vid_0"] == pytest.approx(logs["vid_0"], rel=1e-5)
    assert other_logs["kd_loss"] == pytest.approx(logs["kd_loss"], rel=1e-5)


def test_a_gpt2_student_trains_on_a_gpt2_teacher(distiller):
    x, mask = batch(seed=1)
    teacher_before = weights_of(distiller.teacher)
    student_before = weights_of(distiller.student)
    # Per-token sample weights, as KerasHub's causal-LM preprocessors yield.
    weight = mask.astype("float32")
    history = distiller.fit(x, x["token_ids"], sample_weight=weight, epochs=3, verbose=0).history
    assert np.all(np.isfinite(history["loss"])) and history["loss"][-1] < history["loss"][0]
    for before, after in zip(teacher_before, weights_of(distiller.teacher)):
        np.testing.assert_array_equal(before, after)
    assert any(
        not np.allclose(b, a) for b, a in zip(student_before, weights_of(distiller.student))
    )
    logits = to_numpy(distiller.predict(x, verbose=0))
    np.testing.assert_allclose(logits, to_numpy(distiller.student(x)), rtol=1e-5, atol=1e-5)


def bert_classifier(name, layers, hidden):
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=VOCAB,
        num_layers=layers,
        num_heads=2,
        hidden_dim=hidden,
        intermediate_dim=2 * hidden,
        max_sequence_length=16,
        name=f"{name}_backbone",
    )
    return keras_hub.models.BertTextClassifier(
        backbone=backbone, num_classes=2, preprocessor=None, name=name
    )


def test_suggest_pairs_maps_bert_stacks_uniformly_and_the_pairs_train():
    keras.utils.set_random_seed(0)
    teacher, student = bert_classifier("teacher", 4, 16), bert_classifier("student", 2, 8)
    pairs = suggest_pairs(teacher, student)
    assert pairs == [
        ("student_backbone/embeddings_layer_norm", "teacher_backbone/embeddings_layer_norm"),
        ("student_backbone/transformer_layer_0", "teacher_backbone/transformer_layer_1"),
        ("student_backbone/transformer_layer_1", "teacher_backbone/transformer_layer_3"),
    ]
    distiller = VIDDistiller(teacher, student, pairs="auto")
    sources = {f"pair_{i}": "input" for i in range(3)}
    assert distiller._mask_sources == {**sources, "logits": None}  # sentence logits: no mask
    distiller.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    x, mask = batch()
    x["segment_ids"] = np.zeros_like(x["token_ids"])
    before = weights_of(distiller.student)
    logs = distiller.train_on_batch(x, np.array([0, 1, 0, 1]), return_dict=True)
    assert all(np.isfinite(logs[f"vid_{i}"]) for i in range(3))
    assert any(not np.allclose(b, a) for b, a in zip(before, weights_of(distiller.student)))


def test_suggest_pairs_maps_a_gpt2_stack_onto_a_one_layer_student():
    teacher, student = causal_lm("teacher", 4, 16), causal_lm("student", 1, 8)
    assert suggest_pairs(teacher, student) == [
        ("student_backbone/embeddings_add", "teacher_backbone/embeddings_add"),
        ("student_backbone/transformer_layer_0", "teacher_backbone/transformer_layer_3"),
    ]


def test_vits_with_different_patch_sizes_pair_their_encoders_class_token_apart():
    keras.utils.set_random_seed(0)

    def vit(name, patch, hidden):
        backbone = keras_hub.models.ViTBackbone(
            image_shape=(16, 16, 3),
            patch_size=patch,
            num_layers=1,
            num_heads=2,
            hidden_dim=hidden,
            mlp_dim=2 * hidden,
            name=f"{name}_backbone",
        )
        return keras_hub.models.ViTImageClassifier(
            backbone=backbone, num_classes=3, preprocessor=None, name=name
        )

    teacher, student = vit("teacher", 4, 16), vit("student", 8, 8)
    pairs = suggest_pairs(teacher, student)
    assert pairs[-1] == ("student_backbone/vit_encoder", "teacher_backbone/vit_encoder")
    distiller = VIDDistiller(
        teacher, student, pairs=pairs, head_options={"class_tokens": 1, "token_grid": True}
    )
    head = distiller.heads[-1]
    # 1 + 4×4 teacher patches pooled to the student's 1 + 2×2.
    assert head.teacher_shape[1:] == (17, 16) and head.student_shape[1:] == (5, 8)
    assert head.teacher_pool.grid and head.teacher_pool.length == 4
    distiller.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    images = np.random.default_rng(0).random((2, 16, 16, 3)).astype("float32")
    logs = distiller.train_on_batch(images, np.array([0, 2]), return_dict=True)
    assert np.isfinite(logs["loss"])
