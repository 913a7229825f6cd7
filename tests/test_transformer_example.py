"""`examples/distil_transformer.py` (issue 14): a KerasHub BERT classifier built
from a config, trained as teacher on SST-2 phrases, distilled into a smaller
BERT with token-wise VID on nested backbone layers plus KD."""

import os
import sys

import numpy as np
import pytest

keras_hub = pytest.importorskip("keras_hub")

from conftest import to_numpy, weights_of  # noqa: E402

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "examples")
sys.path.insert(0, EXAMPLES)
import distil_transformer as example  # noqa: E402

TRAIN = os.path.join(example.DATA_DIR, "sst2_train.tsv")


def test_vocabulary_and_encoding():
    vocabulary = example.build_vocabulary(["a good film", "a bad film", "good fun"])
    assert list(vocabulary) == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a", "film", "good"]
    x = example.encode(["a bad film", "good good good good good"], vocabulary, 6)
    a, film, good = vocabulary["a"], vocabulary["film"], vocabulary["good"]
    np.testing.assert_array_equal(
        x["token_ids"], [[2, a, 1, film, 3, 0], [2, good, good, good, good, 3]]
    )
    np.testing.assert_array_equal(x["padding_mask"], [[1, 1, 1, 1, 1, 0], [1] * 6])
    np.testing.assert_array_equal(x["segment_ids"], np.zeros((2, 6)))


def test_uniform_pairs_follow_tinybert():
    assert example.uniform_pairs(2, 4) == [
        ("student_backbone/embeddings_layer_norm", "teacher_backbone/embeddings_layer_norm"),
        ("student_backbone/transformer_layer_0", "teacher_backbone/transformer_layer_1"),
        ("student_backbone/transformer_layer_1", "teacher_backbone/transformer_layer_3"),
    ]
    assert example.uniform_pairs(1, 3, embeddings=False) == [
        ("student_backbone/transformer_layer_0", "teacher_backbone/transformer_layer_2")
    ]


@pytest.mark.skipif(not os.path.exists(TRAIN), reason=f"SST-2 is not at {TRAIN}")
def test_a_bert_teacher_distils_into_a_smaller_bert_on_sst2():
    import keras

    keras.utils.set_random_seed(0)
    text, y = example.load_tsv(TRAIN)
    text, y = text[:256], y[:256]
    assert set(np.unique(y)) == {0, 1}
    vocabulary = example.build_vocabulary(text)
    length = 24
    x = example.encode(text, vocabulary, length)
    teacher = example.bert_classifier("teacher", len(vocabulary), 2, 16, 2, 32, length)
    example.train_teacher(teacher, x, y, epochs=1, batch_size=64, verbose=0)
    student = example.bert_classifier("student", len(vocabulary), 1, 8, 1, 16, length)
    pairs = example.uniform_pairs(1, 2)
    teacher_before, student_before = weights_of(teacher), weights_of(student)

    rows = slice(0, 128)
    x_small = {key: value[rows] for key, value in x.items()}
    distiller, history = example.distil(
        teacher,
        student,
        x_small,
        y[rows],
        pairs,
        epochs=2,
        batch_size=32,
        vid_weight=1.0,
        kd_weight=1.0,
        temperature=2.0,
    )
    # Both token pairs are masked by the "padding_mask" input; the logits are
    # per sentence, so KD is not.
    assert distiller._mask_sources == {"pair_0": "input", "pair_1": "input", "logits": None}
    for key in ("vid_0", "vid_1", "kd_loss", "task_loss", "loss"):
        assert len(history[key]) == 2 and np.all(np.isfinite(history[key])), key
    assert history["kd_loss"][-1] >= 0
    for before, after in zip(teacher_before, weights_of(teacher)):
        np.testing.assert_array_equal(before, after)
    assert any(not np.allclose(b, a) for b, a in zip(student_before, weights_of(student)))
    # The VID terms read real tokens only: other ids at padded positions (the
    # attention masks them as keys) leave the terms unchanged.
    mask = x_small["padding_mask"].astype(bool)
    assert not mask.all()
    noisy = dict(x_small, token_ids=x_small["token_ids"].copy())
    noise = np.random.default_rng(1).integers(4, len(vocabulary), size=mask.shape)
    noisy["token_ids"][~mask] = noise[~mask]
    logs = distiller.test_on_batch(x_small, y[rows], return_dict=True)
    noisy_logs = distiller.test_on_batch(noisy, y[rows], return_dict=True)
    features = distiller.teacher_extractor.predict_on_batch(x_small)
    noisy_features = distiller.teacher_extractor.predict_on_batch(noisy)
    assert not np.allclose(
        to_numpy(features["pair_0"])[~mask], to_numpy(noisy_features["pair_0"])[~mask]
    )
    for key in ("vid_0", "vid_1"):
        assert noisy_logs[key] == pytest.approx(logs[key], rel=1e-4, abs=1e-5), key
    accuracy = example.accuracy(distiller.student, x_small, y[rows])
    assert 0.0 <= accuracy <= 1.0
