"""Token-wise VID and KD on `(batch, tokens, dim)` features with a padding mask."""

import keras
import numpy as np
import numpy_reference as ref
import pytest
from conftest import CallCounter, calls_per_step, to_numpy, value_and_grad
from keras import ops

from keras_vid import PairLoss, VIDDistiller, VIDHead
from keras_vid.losses import gaussian_nll, reduce_tokens

VOCAB, LENGTH = 12, 6
LENGTHS = [6, 3, 1, 0]  # real tokens per example; the last one is all padding


def padded(rng, dim, fill=1e3):
    """`(features, mask)`: random `(4, LENGTH, dim)` features whose padded
    positions hold `fill` (a value that would dominate any leaked term)."""
    mask = np.arange(LENGTH)[None, :] < np.array(LENGTHS)[:, None]
    x = rng.normal(size=(len(LENGTHS), LENGTH, dim)).astype("float32")
    x[~mask] = fill
    return x, mask


def unpadded_nll(per_sequence):
    """The per-example reference: `per_sequence(i, L)` on each example's
    real tokens, 0 for an example without any."""
    return np.array([per_sequence(i, n) if n else 0.0 for i, n in enumerate(LENGTHS)])


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_masked_gaussian_nll_equals_numpy_on_unpadded_sequences(reduction):
    rng = np.random.default_rng(0)
    teacher, mask = padded(rng, 3)
    mean, _ = padded(rng, 3, fill=-1e3)
    std = rng.uniform(0.5, 2.0, size=3).astype("float32")
    got = to_numpy(gaussian_nll(teacher, mean, std, reduction=reduction, mask=mask))
    want = unpadded_nll(
        lambda i, n: ref.nll(teacher[i : i + 1, :n], mean[i : i + 1, :n], std, reduction)[0]
    )
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert got[-1] == 0.0


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_masked_head_equals_numpy_and_padding_gets_no_gradient(reduction):
    rng = np.random.default_rng(1)
    student, mask = padded(rng, 5)
    teacher, _ = padded(rng, 3)
    keras.utils.set_random_seed(0)
    head = VIDHead(reduction=reduction, init_variance=2.0, hidden_width=32)  # no dead ReLU rows
    head.build((None, None, 5), (None, None, 3))
    want = unpadded_nll(
        lambda i, n: ref.head_nll(head, student[i : i + 1, :n], teacher[i : i + 1, :n])[0]
    )
    nll = to_numpy(head(student, teacher, padding_mask=mask))
    np.testing.assert_allclose(nll, want, rtol=1e-5, atol=1e-6)
    assert np.all(np.isfinite(nll)) and nll[-1] == 0.0

    total, grad = value_and_grad(lambda s: ops.sum(head(s, teacher, padding_mask=mask)), student)
    assert np.isfinite(total) and np.all(np.isfinite(grad))
    assert np.all(grad[~mask] == 0.0)  # exactly zero at every padded token
    assert np.all(np.abs(grad[mask]).sum(axis=-1) > 0)
    assert np.all(grad[-1] == 0.0)  # the all-padding example


def test_reduce_tokens_averages_real_tokens_only():
    values = np.array([[1.0, 3.0, 9.0], [2.0, 5.0, 7.0], [4.0, 4.0, 4.0]], "float32")
    mask = np.array([[1, 1, 0], [0, 0, 0], [1, 1, 1]])
    np.testing.assert_allclose(to_numpy(reduce_tokens(values, mask)), [2.0, 0.0, 4.0])
    np.testing.assert_allclose(to_numpy(reduce_tokens(values, mask, "sum")), [4.0, 0.0, 12.0])
    np.testing.assert_allclose(to_numpy(reduce_tokens(values)), values.mean(axis=1), rtol=1e-6)


def test_a_mask_on_features_that_are_not_tokens_is_refused():
    x = np.zeros((2, 4, 4, 3), "float32")
    with pytest.raises(
        ValueError, match=r"token features.*Received: teacher shape \(2, 4, 4, 3\)"
    ):
        gaussian_nll(x, x, np.ones(3, "float32"), mask=np.ones((2, 4)))
    head = VIDHead()
    head.build((None, 8, 5), (None, 4, 3))  # pooled: not token by token
    with pytest.raises(ValueError, match=r"padding_mask.*Received: student shape \(None, 8, 5\)"):
        head(
            np.zeros((2, 8, 5), "float32"),
            np.zeros((2, 4, 3), "float32"),
            padding_mask=[[1] * 4] * 2,
        )


# --------------------------------------------------------------- the distiller


def token_model(prefix, dim, source="embedding", count=False):
    """Per-token logits `(batch, tokens, VOCAB)` from pointwise layers, so a
    real token's features do not depend on the padding.

    `source="embedding"`: one `token_ids` input and `Embedding(mask_zero=True)`
    (the Keras mask). `source="<key>"`: a dict `{"token_ids", key}` whose
    mask entry multiplies the block's output (KerasHub's layout).
    """
    ids = keras.Input((None,), dtype="int32", name="token_ids")
    h = keras.layers.Embedding(VOCAB, dim, mask_zero=source == "embedding", name=f"{prefix}_emb")(
        ids
    )
    h = keras.layers.Dense(dim, activation="tanh", name=f"{prefix}_block")(h)
    if count:
        h = CallCounter(name=f"{prefix}_counter")(h)
    if source != "embedding":
        mask = keras.Input((None,), dtype="int32", name=source)
        h = h * ops.expand_dims(ops.cast(mask, h.dtype), -1)
        h = keras.layers.Identity(name=f"{prefix}_masked")(h)
    logits = keras.layers.Dense(VOCAB, name=f"{prefix}_logits")(h)
    inputs = ids if source == "embedding" else {"token_ids": ids, source: mask}
    return keras.Model(inputs, logits, name=prefix)


def token_batch(key=None):
    rng = np.random.default_rng(3)
    mask = np.arange(LENGTH)[None, :] < np.array(LENGTHS)[:, None]
    ids = np.where(mask, rng.integers(1, VOCAB, size=mask.shape), 0).astype("int32")
    return (ids if key is None else {"token_ids": ids, key: mask.astype("int32")}), mask


def unpadded_terms(distiller, ids, key, temperature):
    """VID and KD per example, the models run on each unpadded sequence alone."""
    vid, kd = [], []
    for i, n in enumerate(LENGTHS):
        if n == 0:
            vid.append(0.0), kd.append(0.0)
            continue
        x = ids[i : i + 1, :n]
        if key is not None:
            x = {"token_ids": x, key: np.ones_like(x)}
        s, t = (
            distiller.student_extractor.predict_on_batch(x),
            distiller.teacher_extractor.predict_on_batch(x),
        )
        vid.append(ref.head_nll(distiller.heads[0], s["pair_0"], t["pair_0"])[0])
        kd.append(ref.softened_kl(t["logits"], s["logits"], temperature)[0].mean())
    return np.array(vid), np.array(kd)


@pytest.mark.parametrize("key", [None, "padding_mask", "attention_mask"])
def test_masked_distiller_terms_equal_numpy_on_unpadded_sequences(key):
    keras.utils.set_random_seed(0)
    source = "embedding" if key is None else key
    teacher, student = token_model("t", 8, source), token_model("s", 4, source)
    block = "block" if key is None else "masked"
    options = {} if key in (None, "padding_mask") else {"token_mask": key}
    distiller = VIDDistiller(teacher, student, pairs=[(f"s_{block}", f"t_{block}")], **options)
    assert distiller._mask_sources == (
        {"pair_0": "teacher", "logits": "teacher"}
        if key is None
        else {"pair_0": "input", "logits": "input"}
    )
    distiller.compile(optimizer="sgd", kd_weight=1.0, temperature=2.0)
    x, _ = token_batch(key)
    logs = distiller.test_on_batch(x, return_dict=True)
    ids = x if key is None else x["token_ids"]
    vid, kd = unpadded_terms(distiller, ids, key, 2.0)
    assert logs["vid_0"] == pytest.approx(vid.mean(), rel=1e-4)
    assert logs["kd_loss"] == pytest.approx(kd.mean(), rel=1e-4)
    history = distiller.fit(x, epochs=2, verbose=0).history
    assert np.all(np.isfinite(history["loss"]))


def test_masked_token_pairs_run_each_model_once_per_step_on_dict_inputs():
    keras.utils.set_random_seed(0)
    teacher = token_model("t", 8, "padding_mask", count=True)
    student = token_model("s", 4, "padding_mask", count=True)
    distiller = VIDDistiller(teacher, student, pairs=[("s_masked", "t_masked")])
    distiller.compile(optimizer="sgd", kd_weight=1.0, run_eagerly=True)
    assert distiller._mask_sources["pair_0"] == "input"
    x, _ = token_batch("padding_mask")
    # One teacher pass and one student pass per step.
    assert calls_per_step(distiller, x, None, batch_size=2) == [2, 2]


def test_token_mask_none_averages_every_token():
    keras.utils.set_random_seed(0)
    teacher, student = token_model("t", 8), token_model("s", 4)
    distiller = VIDDistiller(teacher, student, pairs=[("s_block", "t_block")], token_mask=None)
    assert distiller._mask_sources == {"pair_0": None, "logits": None}
    distiller.compile(optimizer="sgd", kd_weight=1.0, temperature=2.0)
    ids, _ = token_batch()
    logs = distiller.test_on_batch(ids, return_dict=True)
    s, t = (
        distiller.student_extractor.predict_on_batch(ids),
        distiller.teacher_extractor.predict_on_batch(ids),
    )
    nll = ref.head_nll(distiller.heads[0], s["pair_0"], t["pair_0"])
    assert logs["vid_0"] == pytest.approx(nll.mean(), rel=1e-4)
    kd = ref.softened_kl(t["logits"], s["logits"], 2.0)
    assert logs["kd_loss"] == pytest.approx(kd.mean(), rel=1e-4)
    assert distiller.get_config()["token_mask"] is None


def test_masked_distiller_saves_and_loads(tmp_path):
    keras.utils.set_random_seed(0)
    teacher, student = token_model("t", 8, "attention_mask"), token_model("s", 4, "attention_mask")
    distiller = VIDDistiller(
        teacher, student, pairs=[("s_masked", "t_masked")], token_mask="attention_mask"
    )
    distiller.compile(optimizer="adam", kd_weight=1.0)
    x, _ = token_batch("attention_mask")
    distiller.fit(x, epochs=1, verbose=0)
    distiller.save(tmp_path / "d.keras")
    loaded = keras.saving.load_model(tmp_path / "d.keras")
    assert loaded.token_mask == "attention_mask"
    assert loaded._mask_sources == distiller._mask_sources
    first = distiller.train_on_batch(x, return_dict=True)
    second = loaded.train_on_batch(x, return_dict=True)
    assert second["loss"] == pytest.approx(first["loss"], rel=1e-5)


@pytest.mark.parametrize(
    "token_mask,match",
    [
        (
            "nope",
            r"`token_mask` names the input 'nope'.*dict inputs \['token_ids', 'attention_mask'\]",
        ),
        (3, r"`token_mask` must be 'auto'.*Received: token_mask=3"),
    ],
)
def test_unknown_token_mask_is_refused(token_mask, match):
    teacher, student = token_model("t", 8, "attention_mask"), token_model("s", 4, "attention_mask")
    with pytest.raises(ValueError, match=match):
        VIDDistiller(teacher, student, pairs=[("s_masked", "t_masked")], token_mask=token_mask)


def test_token_mask_key_on_a_single_tensor_input_is_refused():
    with pytest.raises(ValueError, match=r"names the input 'padding_mask'.*no dict of inputs"):
        VIDDistiller(token_model("t", 8), token_model("s", 4), pairs=[], token_mask="padding_mask")


def test_a_custom_head_without_padding_mask_on_a_masked_pair_is_refused():
    class Mse(PairLoss):
        def call(self, student, teacher, training=None):
            return ops.mean(ops.square(student - teacher), axis=(1, 2))

    with pytest.raises(
        ValueError, match=r"Pair 0 \('s_block', 't_block'\).*takes no `padding_mask`"
    ):
        VIDDistiller(
            token_model("t", 4), token_model("s", 4), pairs=[("s_block", "t_block")], heads=[Mse()]
        )


def test_per_token_sample_weights_weigh_each_example_by_its_real_tokens():
    keras.utils.set_random_seed(0)
    teacher, student = token_model("t", 8), token_model("s", 4)
    distiller = VIDDistiller(teacher, student, pairs=[("s_block", "t_block")])
    distiller.compile(
        optimizer="sgd",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        kd_weight=1.0,
        temperature=2.0,
    )
    ids, mask = token_batch()
    rng = np.random.default_rng(4)
    weight = (mask * rng.uniform(0.5, 2.0, size=mask.shape)).astype("float32")
    labels = rng.integers(0, VOCAB, size=mask.shape)
    logs = distiller.test_on_batch(ids, labels, sample_weight=weight, return_dict=True)
    vid, kd = unpadded_terms(distiller, ids, None, 2.0)
    per_example = np.array([weight[i, :n].mean() if n else 0.0 for i, n in enumerate(LENGTHS)])
    assert logs["vid_0"] == pytest.approx(np.mean(per_example * vid), rel=1e-4)
    assert logs["kd_loss"] == pytest.approx(np.mean(per_example * kd), rel=1e-4)
    # The compiled loss keeps Keras's per-token weighting (which, with the
    # Keras mask the logits carry, averages over the real tokens).
    logits = distiller.student_extractor.predict_on_batch(ids)["logits"].astype("float64")
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    ce = -np.take_along_axis(log_p, labels[..., None], axis=-1)[..., 0]
    assert logs["task_loss"] == pytest.approx(np.sum(weight * ce) / mask.sum(), rel=1e-4)
