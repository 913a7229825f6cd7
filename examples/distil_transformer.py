"""Distil a BERT-style transformer into a smaller one with token-wise VID + KD.

Runs offline on any backend (`KERAS_BACKEND=tensorflow|jax|torch`) on SST-2
(binary sentiment), read from the GLUE-style TSV files in `--data-dir`
(a `label` column and a text column, tab-separated, any column order):

1. a word-level vocabulary from the training split (the text is already
   lower-cased and split on spaces: the words seen at least twice, by
   frequency, after `[PAD]`, `[UNK]`, `[CLS]`, `[SEP]`); no tokenizer download;
2. a teacher `keras_hub.models.BertTextClassifier` built from a config
   (random weights, no preset) and trained from scratch on every phrase;
3. a student with fewer, narrower layers, trained on a few labelled phrases
   with `VIDDistiller`: token-wise VID on TinyBERT-style layer pairs
   (embeddings ↔ embeddings, student layer m ↔ teacher layer m·N/M) plus
   Hinton KD on the logits. The pairs are paths into the nested backbones
   (`"student_backbone/transformer_layer_1"`); padded tokens are left out of
   the VID terms through the `"padding_mask"` input (`token_mask="auto"`).

    python examples/distil_transformer.py            # a few minutes on CPU
    python examples/distil_transformer.py --quick    # tiny models, seconds

The measured comparison (student alone, KD, VID, KD + VID; 2 data sizes,
2 seeds) is `results/sst2/README.md`.
"""

import argparse
import collections
import csv
import os

import keras
import keras_hub
import numpy as np

from keras_vid import VIDDistiller

# The repository's ../shared/data, found from this script's folder (in a
# notebook, from examples/notebooks/, the notebook's own folder).
HERE = os.path.abspath(os.path.dirname(__file__) if "__file__" in globals() else "..")
DATA_DIR = os.path.join(HERE, "..", "..", "shared", "data")
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]  # ids 0, 1, 2, 3
CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


"""
## Vocabulary, models and training helpers

A word-level vocabulary (no tokenizer download), BERT classifiers built from
a config, TinyBERT's uniform layer pairs, and the two training loops.
"""


def load_tsv(path):
    """`(sentences, labels)` of a GLUE-style TSV with a `label` column."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(rows)
        label = header.index("label")
        text = 1 - label
        data = [(row[text], int(row[label])) for row in rows]
    return [s for s, _ in data], np.array([y for _, y in data], dtype="int32")


def build_vocabulary(sentences, min_count=2, max_words=None):
    """Special tokens, then the words seen at least `min_count` times, most
    frequent first (ties alphabetical): `{word: id}`."""
    counts = collections.Counter(w for s in sentences for w in s.split())
    words = sorted((w for w, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w))
    return {w: i for i, w in enumerate(SPECIAL + words[:max_words])}


def encode(sentences, vocabulary, length):
    """BERT inputs, right-padded to `length`: `[CLS] words [SEP]`, the words
    cut to `length - 2` (unknown words are `[UNK]`)."""
    ids = np.zeros((len(sentences), length), dtype="int32")
    unk, cls, sep = (vocabulary[t] for t in SPECIAL[1:])
    for row, sentence in enumerate(sentences):
        words = [vocabulary.get(w, unk) for w in sentence.split()][: length - 2]
        ids[row, : len(words) + 2] = [cls, *words, sep]
    return {
        "token_ids": ids,
        "segment_ids": np.zeros_like(ids),
        "padding_mask": (ids != 0).astype("int32"),
    }


def bert_classifier(name, vocabulary_size, layers, hidden, heads, intermediate, max_length):
    """A BERT text classifier from a config; its backbone is `<name>_backbone`."""
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=vocabulary_size,
        num_layers=layers,
        num_heads=heads,
        hidden_dim=hidden,
        intermediate_dim=intermediate,
        max_sequence_length=max_length,
        name=f"{name}_backbone",
    )
    return keras_hub.models.BertTextClassifier(
        backbone=backbone, num_classes=2, preprocessor=None, name=name
    )


def uniform_pairs(student_layers, teacher_layers, embeddings=True):
    """TinyBERT's uniform mapping: student layer m ↔ teacher layer m·N/M
    (1-based; 0-based `m` ↔ `(m + 1)·k − 1`), plus embeddings ↔ embeddings."""
    k = teacher_layers // student_layers
    pairs = [("embeddings_layer_norm", "embeddings_layer_norm")] if embeddings else []
    pairs += [
        (f"transformer_layer_{m}", f"transformer_layer_{(m + 1) * k - 1}")
        for m in range(student_layers)
    ]
    return [(f"student_backbone/{s}", f"teacher_backbone/{t}") for s, t in pairs]


def adamw(learning_rate, steps):
    """AdamW with 10 % linear warm-up and cosine decay to 0."""
    warmup = max(1, steps // 10)
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, max(1, steps - warmup), warmup_target=learning_rate, warmup_steps=warmup
    )
    return keras.optimizers.AdamW(schedule, weight_decay=0.01, global_clipnorm=1.0)


def train_teacher(teacher, x, y, epochs, batch_size, learning_rate=5e-4, seed=0, verbose=2):
    steps = epochs * -(-len(y) // batch_size)
    teacher.compile(optimizer=adamw(learning_rate, steps), loss=CE, metrics=["accuracy"])
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        # A KerasHub task's `fit` batches NumPy inputs in order (its `shuffle`
        # is ignored, with a warning): shuffle here, once per epoch.
        order = rng.permutation(len(y))
        x_epoch = {key: value[order] for key, value in x.items()}
        teacher.fit(
            x_epoch, y[order], batch_size=batch_size, epochs=1, shuffle=False, verbose=verbose
        )
    return teacher


def distil(teacher, student, x, y, pairs, epochs, batch_size, learning_rate=1e-3, **weights):
    """Train `student` on `(x, y)` with VID on `pairs` and KD: `weights` are
    `vid_weight`, `kd_weight`, `temperature` for `compile`."""
    distiller = VIDDistiller(teacher, student, pairs=pairs, head_options={"depth": 1})
    steps = epochs * -(-len(y) // batch_size)
    distiller.compile(
        optimizer=adamw(learning_rate, steps), loss=CE, metrics=["accuracy"], **weights
    )
    history = distiller.fit(x, y, batch_size=batch_size, epochs=epochs, verbose=0)
    return distiller, history.history


def accuracy(model, x, y, batch_size=256):
    logits = model.predict(x, batch_size=batch_size, verbose=0)
    return float(np.mean(np.argmax(keras.ops.convert_to_numpy(logits), axis=-1) == y))


"""
## Train the teacher, then distil it

The teacher learns from every phrase; the student sees a few labelled
phrases, with token-wise VID on the uniform layer pairs and KD on the logits.
"""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=DATA_DIR, help="sst2_{train,dev}.tsv live here")
    parser.add_argument("--quick", action="store_true", help="tiny models and data (seconds)")
    parser.add_argument("--labelled", type=int, default=1000, help="student's labelled phrases")
    parser.add_argument("--teacher-epochs", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=20, help="student epochs")
    parser.add_argument("--vid-weight", type=float, default=1.0)
    parser.add_argument("--kd-weight", type=float, default=1.0)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    keras.utils.set_random_seed(args.seed)
    train_text, train_y = load_tsv(os.path.join(args.data_dir, "sst2_train.tsv"))
    dev_text, dev_y = load_tsv(os.path.join(args.data_dir, "sst2_dev.tsv"))
    # Sizes: teacher 4 x 128 (intermediate 256), student 2 x 64 (128); 64 tokens
    # fit every SST-2 sentence. --quick: 2 x 16 -> 1 x 8, 32 tokens, 512 phrases.
    length, teacher_size, student_size, batch = 64, (4, 128, 4, 256), (2, 64, 2, 128), 64
    if args.quick:
        length, teacher_size, student_size, batch = 32, (2, 16, 2, 32), (1, 8, 1, 16), 32
        train_text, train_y = train_text[:512], train_y[:512]
        dev_text, dev_y = dev_text[:128], dev_y[:128]
        args.labelled, args.epochs = min(args.labelled, 128), min(args.epochs, 2)
    vocabulary = build_vocabulary(train_text)
    x, dev_x = encode(train_text, vocabulary, length), encode(dev_text, vocabulary, length)
    print(f"vocabulary: {len(vocabulary)} ids; {len(train_y)} training phrases")

    teacher = bert_classifier("teacher", len(vocabulary), *teacher_size, length)
    train_teacher(
        teacher,
        x,
        train_y,
        args.teacher_epochs,
        batch,
        seed=args.seed,
        verbose=0 if args.quick else 2,
    )
    print(f"teacher: dev accuracy {accuracy(teacher, dev_x, dev_y):.3f}")

    rows = np.random.default_rng(args.seed).permutation(len(train_y))[: args.labelled]
    student = bert_classifier("student", len(vocabulary), *student_size, length)
    pairs = uniform_pairs(student_size[0], teacher_size[0])
    distiller, history = distil(
        teacher,
        student,
        {key: value[rows] for key, value in x.items()},
        train_y[rows],
        pairs,
        args.epochs,
        min(batch, len(rows)),
        vid_weight=args.vid_weight,
        kd_weight=args.kd_weight,
        temperature=args.temperature,
    )
    terms = {k: round(v[-1], 4) for k, v in history.items() if k.startswith(("vid_", "kd_"))}
    print(f"student ({len(rows)} labelled phrases), last epoch: {terms}")
    print(f"student: dev accuracy {accuracy(distiller.student, dev_x, dev_y):.3f}")
    return {"teacher": teacher, "distiller": distiller, "history": history, "pairs": pairs}


if __name__ == "__main__":
    main()
