"""Bad input, faults and awkward models a new user meets: how does keras_vid answer?

Every case runs a small, realistic misuse (or a legitimate model that used
to trip the library) and is classified as

- ``handled``: it trains or answers correctly (values checked, not just "no error");
- ``clear error``: it fails early with an error that names the fault;
- ``confusing error``: it fails with an error that does not say what is wrong;
- ``silent wrong``: it runs, but the result is wrong and nothing says so;
- ``crash``: the process died (a worker that did not report).

    python benchmarks/failure_sweep.py                  # every backend, one process each
    python benchmarks/failure_sweep.py --backend jax    # one backend
    python benchmarks/failure_sweep.py --json out.json  # also write every cell

Each backend runs in its own process (``KERAS_BACKEND`` is read once per
process); the table gives one row per case and the count per class.
"""

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import traceback
import warnings

CLASSES = ("handled", "clear error", "confusing error", "silent wrong", "crash")
BACKENDS = ("tensorflow", "jax", "torch")


class SilentWrong(AssertionError):
    """The case ran, but its result is wrong."""


def check(condition, message):
    if not condition:
        raise SilentWrong(message)


# --------------------------------------------------------------------- cases

CASES = []


def case(item, expect="works", names=()):
    """Register a case. `expect="works"`: it must run and pass its checks;
    `expect="error"`: it must raise an error whose message contains every
    string of `names` (the fault it names)."""

    def register(function):
        CASES.append((function.__name__, item, expect, tuple(names), function))
        return function

    return register


def models(classes=4, t_classes=None, softmax=None, size=8):
    """A small teacher and student pair on (size, size, 3) images."""
    import keras

    t_classes = t_classes or classes
    ti = keras.Input((size, size, 3), name="t_in")
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="t_conv")(ti)
    h = keras.layers.GlobalAveragePooling2D(name="t_pool")(h)
    if softmax == "activation":
        out = keras.layers.Dense(t_classes, activation="softmax", name="t_logits")(h)
    elif softmax == "layer":
        out = keras.layers.Dense(t_classes, name="t_dense")(h)
        out = keras.layers.Softmax(name="t_logits")(out)
    else:
        out = keras.layers.Dense(t_classes, name="t_logits")(h)
    teacher = keras.Model(ti, out, name="teacher")
    si = keras.Input((size, size, 3), name="s_in")
    g = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="s_conv")(si)
    g = keras.layers.GlobalAveragePooling2D(name="s_pool")(g)
    student = keras.Model(si, keras.layers.Dense(classes, name="s_logits")(g), name="student")
    return teacher, student


def data(n=32, classes=4, size=8, seed=0):
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, size, size, 3)).astype("float32")
    return x, rng.integers(0, classes, size=(n,)).astype("int32")


def sparse_ce():
    import keras

    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def distiller_for(teacher, student, pairs=(("s_conv", "t_conv"),), **compile_args):
    import keras_vid

    distiller = keras_vid.VIDDistiller(teacher, student, pairs=list(pairs))
    compile_args.setdefault("loss", sparse_ce())
    distiller.compile(optimizer="sgd", **compile_args)
    return distiller


def reference_kd(teacher_logits, student_logits, temperature):
    """T² · KL(softmax(t/T) ‖ softmax(s/T)), per example, in 60-digit decimal
    arithmetic (float64 itself cancels at T = 1e5): the tests' reference."""
    import importlib.util

    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests")
    spec = importlib.util.spec_from_file_location(
        "numpy_reference", os.path.join(path, "numpy_reference.py")
    )
    reference = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reference)
    return reference.softened_kl_exact(teacher_logits, student_logits, temperature)


def _kd_against_pre_softmax(softmax):
    import keras
    import numpy as np

    teacher, student = models(softmax=softmax)
    x, y = data()
    distiller = distiller_for(teacher, student, kd_weight=1.0)
    logs = distiller.evaluate(x, y, return_dict=True, verbose=0)
    dense = teacher.get_layer("t_logits" if softmax == "activation" else "t_dense")
    features = keras.Model(teacher.inputs, teacher.get_layer("t_pool").output)(x)
    kernel, bias = (keras.ops.convert_to_numpy(w) for w in dense.weights)
    logits = keras.ops.convert_to_numpy(features) @ kernel + bias
    expected = reference_kd(logits, keras.ops.convert_to_numpy(student(x)), 4.0).mean()
    check(
        np.isclose(logs["kd_loss"], expected, rtol=1e-3, atol=1e-5),
        f"kd_loss {logs['kd_loss']:.5f} is not KD on the pre-softmax logits ({expected:.5f})",
    )


@case("1: teacher ends in Dense(activation='softmax')")
def softmax_activation_teacher():
    _kd_against_pre_softmax("activation")


@case("1: teacher ends in a Softmax layer")
def softmax_layer_teacher():
    _kd_against_pre_softmax("layer")


@case("1: softmax student with a from_logits=True loss", "error", ("softmax", "from_logits"))
def softmax_student_from_logits():
    import keras

    teacher, _ = models()
    si = keras.Input((8, 8, 3))
    g = keras.layers.Conv2D(4, 3, padding="same", name="s_conv")(si)
    g = keras.layers.GlobalAveragePooling2D()(g)
    student = keras.Model(si, keras.layers.Dense(4, activation="softmax", name="s_out")(g))
    distiller = distiller_for(teacher, student)
    distiller.fit(*data(), epochs=1, verbose=0)


@case("2: a layer shared by teacher and student", "error", ("shared_dense",))
def shared_layer():
    import keras

    shared = keras.layers.Dense(4, name="shared_dense")
    ti = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(8, 3, name="t_conv")(ti)
    teacher = keras.Model(ti, shared(keras.layers.GlobalAveragePooling2D()(h)))
    si = keras.Input((8, 8, 3))
    g = keras.layers.Conv2D(8, 3, name="s_conv")(si)
    student = keras.Model(si, shared(keras.layers.GlobalAveragePooling2D()(g)))
    distiller = distiller_for(teacher, student)
    distiller.fit(*data(), epochs=1, verbose=0)


@case("3: NaN in float labels (arrays): the step is skipped")
def nan_float_labels():
    import keras
    import numpy as np

    teacher, student = models()
    x, y = data()
    y = y.astype("float32")
    y[3] = np.nan
    distiller = distiller_for(teacher, student)
    distiller.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False)
    skipped = int(keras.ops.convert_to_numpy(distiller.step_guard.skipped_steps))
    check(skipped == 1, f"{skipped} steps skipped; the batch with a NaN label must be")
    weights = [keras.ops.convert_to_numpy(w) for w in distiller.student.weights]
    check(all(np.isfinite(w).all() for w in weights), "the student's weights are not finite")


@case("4: float labels that are not whole numbers (arrays)", "error", ("labels", "whole"))
def fractional_labels_array():
    teacher, student = models()
    x, y = data()
    distiller = distiller_for(teacher, student)
    distiller.fit(x, y.astype("float32") + 0.7, epochs=1, verbose=0)


@case("4: float labels that are not whole numbers (tf.data): the step is skipped")
def fractional_labels_dataset():
    import keras
    import tensorflow as tf

    teacher, student = models()
    x, y = data()
    y = y.astype("float32")
    y[:16] += 0.7
    distiller = distiller_for(teacher, student)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    distiller.fit(dataset, epochs=1, verbose=0)
    skipped = int(keras.ops.convert_to_numpy(distiller.step_guard.skipped_steps))
    check(skipped == 1, f"{skipped} steps skipped; the batch with 3.7-like labels must be")


@case("5: a custom head returning (batch, 1)", "error", ("keepdims_head", "(batch,)"))
def head_with_wrong_shape():
    import keras

    import keras_vid

    class KeepDims(keras_vid.PairLoss):
        def call(self, student, teacher, training=None):
            return keras.ops.mean(keras.ops.square(teacher), axis=(1, 2, 3))[:, None]

    teacher, student = models()
    distiller = keras_vid.VIDDistiller(
        teacher, student, pairs=[("s_conv", "t_conv")], heads=[KeepDims(name="keepdims_head")]
    )
    distiller.compile(optimizer="sgd", loss=sparse_ce())
    x, y = data()
    distiller.fit(x, y, sample_weight=(y == 0).astype("float32"), epochs=1, verbose=0)


@case("6: a top-level student layer called twice", "error", ("s_twice", "2 times"))
def layer_called_twice():
    import keras

    teacher, _ = models()
    si = keras.Input((8, 8, 3))
    conv = keras.layers.Conv2D(3, 3, padding="same", name="s_twice")
    g = conv(conv(si))
    g = keras.layers.GlobalAveragePooling2D()(g)
    student = keras.Model(si, keras.layers.Dense(4)(g))
    distiller_for(teacher, student, pairs=[("s_twice", "t_conv")])


@case("7: a saved distiller keeps jit_compile='auto' when the user set none")
def saved_jit_compile():
    import keras

    teacher, student = models()
    distiller = distiller_for(teacher, student)
    distiller.fit(*data(), epochs=1, verbose=0)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "d.keras")
        distiller.save(path)
        loaded = keras.saving.load_model(path)
    value = loaded.get_compile_config()["jit_compile"]
    check(value == "auto", f"the saved compile config says jit_compile={value!r}")


@case("8: unlabelled data after labelled data: no stale accuracy")
def stale_logs():
    teacher, student = models()
    x, y = data()
    distiller = distiller_for(teacher, student, metrics=["accuracy"])
    distiller.fit(x, y, epochs=1, verbose=0)
    history = distiller.fit(x, epochs=1, verbose=0)
    check("accuracy" not in history.history, f"logs without labels: {list(history.history)}")


@case("9: head_cost_summary counts a transformer student's attention")
def transformer_head_cost():
    import keras

    import keras_vid

    length, vocab, dim, heads, key_dim = 16, 50, 32, 2, 16

    def encoder(name, classes=4):
        tokens = keras.Input((length,), dtype="int32")
        h = keras.layers.Embedding(vocab, dim, name=f"{name}_embed")(tokens)
        a = keras.layers.MultiHeadAttention(heads, key_dim, name=f"{name}_mha")(h, h)
        h = keras.layers.LayerNormalization(name=f"{name}_block")(h + a)
        pooled = keras.layers.GlobalAveragePooling1D()(h)
        return keras.Model(tokens, keras.layers.Dense(classes, name=f"{name}_logits")(pooled))

    teacher, student = encoder("t"), encoder("s")
    distiller = keras_vid.VIDDistiller(teacher, student, pairs=[("s_block", "t_block")])
    summary = keras_vid.head_cost_summary(distiller, print_fn=None)
    attention = 3 * length * dim * heads * key_dim + 2 * length * length * heads * key_dim
    attention += length * heads * key_dim * dim
    expected = attention + dim * 4
    check(
        summary.student_macs == expected,
        f"student MACs {summary.student_macs:,}, analytic count {expected:,}",
    )
    check(not summary.oversized, "a head of dim → dim is flagged larger than the student")


@case("10: KD at T = 1e5 and 1e3 stays accurate in float32")
def kd_large_temperature():
    import numpy as np

    from keras_vid.losses import softened_kl

    rng = np.random.default_rng(0)
    t = rng.normal(size=(8, 10)).astype("float32") * 3
    s = rng.normal(size=(8, 10)).astype("float32") * 3
    for temperature in (1e3, 1e5):
        got = np.asarray(softened_kl(t, s, temperature))
        want = reference_kd(t, s, temperature)
        error = np.max(np.abs(got - want) / want)
        check(error < 1e-4, f"T={temperature:g}: relative error {error:.2g}")


@case("11: different class counts, VID only (kd_weight=0) trains")
def class_counts_vid_only():
    import keras
    import numpy as np

    teacher, student = models(classes=4, t_classes=10)
    distiller = distiller_for(teacher, student)
    before = keras.ops.convert_to_numpy(distiller.student.get_layer("s_conv").kernel)
    distiller.fit(*data(), epochs=1, verbose=0)
    after = keras.ops.convert_to_numpy(distiller.student.get_layer("s_conv").kernel)
    check(not np.allclose(before, after), "the student did not train")


@case("11: different class counts with KD", "error", ("10", "4", "kd_weight"))
def class_counts_kd():
    teacher, student = models(classes=4, t_classes=10)
    distiller = distiller_for(teacher, student, kd_weight=1.0)
    distiller.fit(*data(), epochs=1, verbose=0)


@case("12: pairs='auto' on a graph with a keras.ops call (inputs / 255)")
def auto_pairs_with_ops():
    import keras

    import keras_vid

    def net(name, widths):
        i = keras.Input((16, 16, 3))
        h = i / 255.0
        for k, width in enumerate(widths):
            h = keras.layers.Conv2D(width, 3, padding="same", activation="relu")(h)
            h = keras.layers.MaxPooling2D(name=f"{name}_pool{k}")(h)
        h = keras.layers.GlobalAveragePooling2D()(h)
        return keras.Model(i, keras.layers.Dense(4)(h), name=name)

    distiller = keras_vid.VIDDistiller(net("t", (8, 16)), net("s", (4, 8)), pairs="auto")
    check(len(distiller.pairs) >= 2, f"pairs found: {distiller.pairs}")


@case("13: fit on an empty tf.data dataset", "error", ("empty",))
def empty_dataset_fit():
    import tensorflow as tf

    teacher, student = models()
    x, y = data()
    distiller = distiller_for(teacher, student)
    distiller.fit(tf.data.Dataset.from_tensor_slices((x[:0], y[:0])).batch(8), verbose=0)


@case("13: evaluate on an empty tf.data dataset", "error", ("empty",))
def empty_dataset_evaluate():
    import tensorflow as tf

    teacher, student = models()
    x, y = data()
    distiller = distiller_for(teacher, student)
    distiller.evaluate(tf.data.Dataset.from_tensor_slices((x[:0], y[:0])).batch(8), verbose=0)


@case("13: fit on a tf.data dataset filtered to nothing (unknown length)", "error", ("empty",))
def empty_filtered_dataset_fit():
    import tensorflow as tf

    teacher, student = models()
    x, y = data()
    distiller = distiller_for(teacher, student)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).filter(lambda a, b: b > 100).batch(8)
    distiller.fit(dataset, verbose=0)


@case("13: evaluate on a tf.data dataset filtered to nothing", "error", ("empty",))
def empty_filtered_dataset_evaluate():
    import tensorflow as tf

    teacher, student = models()
    x, y = data()
    distiller = distiller_for(teacher, student)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).filter(lambda a, b: b > 100).batch(8)
    distiller.evaluate(dataset, verbose=0)


@case("13: fit on a PyDataset of length 0", "error", ("empty",))
def empty_py_dataset():
    import keras

    class Empty(keras.utils.PyDataset):
        def __len__(self):
            return 0

        def __getitem__(self, index):
            raise IndexError(index)

    teacher, student = models()
    distiller_for(teacher, student).fit(Empty(), verbose=0)


@case("13: fit on a generator that yields nothing", "error", ("empty",))
def empty_generator():
    teacher, student = models()

    def nothing():
        yield from ()

    distiller_for(teacher, student).fit(nothing(), verbose=0)


@case("14: string labels", "error", ("labels", "str"))
def string_labels():
    import numpy as np

    teacher, student = models()
    x, y = data()
    distiller = distiller_for(teacher, student)
    distiller.fit(x, np.array([f"class_{v}" for v in y]), epochs=1, verbose=0)


@case("16: a nested layer named without its prefix", "error", ("backbone/b_conv",))
def nested_name_without_prefix():
    import keras

    teacher, _ = models()
    bi = keras.Input((8, 8, 3))
    backbone = keras.Model(bi, keras.layers.Conv2D(4, 3, name="b_conv")(bi), name="backbone")
    si = keras.Input((8, 8, 3))
    g = keras.layers.GlobalAveragePooling2D()(backbone(si))
    student = keras.Model(si, keras.layers.Dense(4)(g))
    distiller_for(teacher, student, pairs=[("b_conv", "t_conv")])


@case("18: fit raises no DeprecationWarning from keras_vid's own code")
def deprecation_warning():
    """Keras's own `fit` warns on PyTorch with NumPy 2 (`pythonify_logs` calls
    `np.array` on torch tensors): inherited, not counted. A warning counts
    when the deepest keras_vid frame of its stack is not the call into
    `keras.Model.fit`."""
    teacher, student = models()
    distiller = distiller_for(teacher, student)
    ours = []

    def record(message, category, filename, lineno, file=None, line=None):
        frames = [
            f for f in traceback.extract_stack() if os.sep + "keras_vid" + os.sep in f.filename
        ]
        if issubclass(category, DeprecationWarning) and frames and frames[-1].name != "fit":
            ours.append(f"{frames[-1].filename}:{frames[-1].lineno}")

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = record
        distiller.fit(*data(), epochs=1, verbose=0)
    check(not ours, f"DeprecationWarning raised from {sorted(set(ours))}")


# Cases handled before issue 13, kept so a regression shows.


@case("NaN in an input batch: the step is skipped")
def nan_input():
    import keras

    teacher, student = models()
    x, y = data()
    x[0, 0, 0, 0] = float("nan")
    distiller = distiller_for(teacher, student)
    distiller.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False)
    skipped = int(keras.ops.convert_to_numpy(distiller.step_guard.skipped_steps))
    check(skipped == 1, f"{skipped} steps skipped")


@case("integer labels outside the classes (arrays)", "error", ("labels", "[0, 4)"))
def labels_out_of_range():
    teacher, student = models()
    x, y = data()
    distiller = distiller_for(teacher, student)
    distiller.fit(x, y + 4, epochs=1, verbose=0)


@case("a layer name that does not exist", "error", ("s_cnv", "s_conv"))
def unknown_layer():
    teacher, student = models()
    distiller_for(teacher, student, pairs=[("s_cnv", "t_conv")])


@case("fit on empty arrays", "error", ("0 examples",))
def empty_arrays():
    teacher, student = models()
    x, y = data()
    distiller_for(teacher, student).fit(x[:0], y[:0], verbose=0)


@case("teacher and student with different input shapes", "error", ("input shape",))
def different_inputs():
    teacher, _ = models()
    _, student = models(size=16)
    distiller_for(teacher, student)


# ------------------------------------------- tasks beyond multi-class (issue 24)


def _fit_moves(distiller, x, y):
    import keras
    import numpy as np

    before = [np.array(w) for w in keras.ops.convert_to_numpy(distiller.student.weights[0])]
    history = distiller.fit(x, y, batch_size=8, epochs=2, verbose=0)
    after = [np.array(w) for w in keras.ops.convert_to_numpy(distiller.student.weights[0])]
    skipped = int(keras.ops.convert_to_numpy(distiller.step_guard.skipped_steps))
    check(skipped == 0, f"{skipped} steps skipped")
    check(np.all(np.isfinite(history.history["loss"])), "non-finite loss")
    check(not np.allclose(before, after), "the student did not move")
    return history


@case("a binary classifier with one logit (Dense(1) + BCE, labels 0/1)")
def binary_one_logit():
    import keras
    import numpy as np

    teacher, student = models(classes=1)
    x, _ = data()
    y = np.random.default_rng(1).integers(0, 2, size=(len(x), 1))
    loss = keras.losses.BinaryCrossentropy(from_logits=True)
    distiller = distiller_for(teacher, student, loss=loss, kd_weight=1.0)
    history = _fit_moves(distiller, x, y)
    check(history.history["kd_loss"][-1] > 0, "KD on one logit is 0 (a softmax of one logit)")


@case("a binary classifier on a tf.data dataset")
def binary_dataset():
    import keras
    import numpy as np
    import tensorflow as tf

    teacher, student = models(classes=1)
    x, _ = data()
    y = np.random.default_rng(1).integers(0, 2, size=(len(x), 1))  # integer 0/1 labels
    loss = keras.losses.BinaryCrossentropy(from_logits=True)
    distiller = distiller_for(teacher, student, loss=loss)
    _fit_moves(distiller, tf.data.Dataset.from_tensor_slices((x, y)).batch(8), None)


@case("regression with integer-valued targets (Dense(1) + MSE)")
def regression_int_targets():
    import numpy as np

    teacher, student = models(classes=1)
    x, _ = data()
    y = np.random.default_rng(1).integers(0, 9, size=(len(x), 1))
    _fit_moves(distiller_for(teacher, student, loss="mse"), x, y)


@case("regression with float targets (Dense(2) + MSE)")
def regression_float_targets():
    import numpy as np

    teacher, student = models(classes=2)
    x, _ = data()
    y = np.random.default_rng(1).normal(size=(len(x), 2)).astype("float32")
    _fit_moves(distiller_for(teacher, student, loss="mse"), x, y)


@case("multi-label classification (Dense(3) + sigmoid BCE, multi-hot labels)")
def multi_label():
    import keras
    import numpy as np

    teacher, student = models(classes=3)
    x, _ = data()
    y = np.random.default_rng(1).integers(0, 2, size=(len(x), 3)).astype("float32")
    loss = keras.losses.BinaryCrossentropy(from_logits=True)
    _fit_moves(distiller_for(teacher, student, loss=loss, kd_weight=1.0), x, y)


@case("KD on a regression output", "error", ("regression", "kd_weight=0"))
def regression_kd():
    teacher, student = models(classes=2)
    distiller_for(teacher, student, loss="mse", kd_weight=1.0)


@case("a pair on the student's input layer", "error", ("s_in", "no trainable layer"))
def pair_on_input():
    teacher, student = models()
    distiller_for(teacher, student, pairs=[("s_in", "t_conv")])


@case("a channels-first teacher layer", "error", ("channels-first", "Permute"))
def channels_first_teacher():
    import keras

    ti = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(8, 3, padding="same", name="t_conv")(ti)
    h = keras.layers.Permute((3, 1, 2))(h)  # (batch, 8 channels, 8, 8)
    h = keras.layers.ZeroPadding2D(0, data_format="channels_first", name="t_nchw")(h)
    h = keras.layers.GlobalAveragePooling2D(data_format="channels_first")(h)
    teacher = keras.Model(ti, keras.layers.Dense(4)(h), name="teacher")
    _, student = models()
    distiller_for(teacher, student, pairs=[("s_conv", "t_nchw")])


@case("losses added by the frozen teacher (activity regularizer)")
def teacher_activity_loss():
    import keras
    import numpy as np

    ti = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(
        8, 3, padding="same", name="t_conv", activity_regularizer=keras.regularizers.L2(100.0)
    )(ti)
    h = keras.layers.GlobalAveragePooling2D()(h)
    teacher = keras.Model(ti, keras.layers.Dense(4, name="t_logits")(h), name="teacher")
    _, student = models()
    x, y = data()
    distiller = distiller_for(teacher, student, vid_weight=0.0)
    logs = distiller.evaluate(x, y, batch_size=len(x), verbose=0, return_dict=True)
    ce = float(keras.ops.convert_to_numpy(keras.ops.mean(sparse_ce()(y, student(x)))))
    check(np.isclose(logs["task_loss"], ce, rtol=1e-4), f"task_loss {logs['task_loss']} vs {ce}")
    check(np.isclose(logs["loss"], ce, rtol=1e-4), f"loss {logs['loss']} vs CE {ce}")


@case("validation labels outside the classes", "error", ("validation_data", "[0, 4)"))
def validation_labels_out_of_range():
    teacher, student = models()
    x, y = data()
    distiller_for(teacher, student).fit(x, y, validation_data=(x, y + 4), verbose=0)


@case("a teacher made trainable again after compile (AdamW)")
def teacher_trainable_again():
    import keras
    import numpy as np

    teacher, student = models()
    x, y = data()
    distiller = keras_vid_distiller(teacher, student)
    distiller.compile(optimizer=keras.optimizers.AdamW(0.01, weight_decay=0.5), loss=sparse_ce())
    teacher.trainable = True
    before = [keras.ops.convert_to_numpy(w).copy() for w in teacher.weights]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        distiller.fit(x, y, batch_size=8, epochs=1, verbose=0)
    after = [keras.ops.convert_to_numpy(w) for w in teacher.weights]
    check(all(np.array_equal(a, b) for a, b in zip(before, after)), "the teacher moved")


def keras_vid_distiller(teacher, student, pairs=(("s_conv", "t_conv"),)):
    import keras_vid

    return keras_vid.VIDDistiller(teacher, student, pairs=list(pairs))


@case("temperature=inf", "error", ("temperature", "finite"))
def infinite_temperature():
    teacher, student = models()
    distiller_for(teacher, student, kd_weight=1.0, temperature=float("inf"))


@case("a custom PairLoss returning bfloat16 under mixed_bfloat16")
def bfloat16_pair_loss():
    import keras
    import numpy as np

    import keras_vid

    class HalfLoss(keras_vid.PairLoss):
        def call(self, student, teacher, training=None):
            s = keras.ops.mean(student, axis=(1, 2, 3))
            t = keras.ops.mean(teacher, axis=(1, 2, 3))
            return keras.ops.cast(keras.ops.square(s - t), "bfloat16")

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        teacher, student = models()
        x, y = data()
        distiller = keras_vid.VIDDistiller(
            teacher, student, pairs=[("s_conv", "t_conv")], heads=[HalfLoss()]
        )
        distiller.compile(optimizer="sgd", loss=sparse_ce())
        history = distiller.fit(x, y, batch_size=8, epochs=1, verbose=0)
    finally:
        keras.config.set_dtype_policy(previous)
    check(np.isfinite(history.history["vid_0"][-1]), "non-finite VID term")


@case("labels as a dict keyed by output name (tf.data)", "error", ("dict", "s_logits"))
def dict_labels_dataset():
    import tensorflow as tf

    teacher, student = models()
    x, y = data()
    dataset = tf.data.Dataset.from_tensor_slices((x, {"s_logits": y})).batch(8)
    distiller_for(teacher, student).fit(dataset, verbose=0)


# -------------------------------------------------------------------- runner


def run_case(expect, names, function):
    """(class, detail) of one case in this process."""
    output = io.StringIO()
    try:
        with contextlib.redirect_stdout(output), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            function()
    except SilentWrong as wrong:
        return "silent wrong", str(wrong)
    except Exception as error:  # noqa: BLE001 - classifying any failure is the point
        message = f"{type(error).__name__}: {error}"
        if expect == "error" and all(n.lower() in message.lower() for n in names):
            return "clear error", message[:300]
        if expect == "error":
            return "confusing error", message[:300]
        last = traceback.extract_tb(error.__traceback__)[-1]
        return "confusing error", f"{message[:240]} (at {last.filename}:{last.lineno})"
    if expect == "error":
        return "silent wrong", "ran without an error"
    return "handled", ""


def run_backend(selected):
    import keras  # noqa: F401 - imported here so KERAS_BACKEND is set first

    results = []
    for name, item, expect, names, function in CASES:
        if selected and name not in selected:
            continue
        outcome, detail = run_case(expect, names, function)
        results.append({"case": name, "item": item, "class": outcome, "detail": detail})
        print(json.dumps(results[-1]), flush=True)
    return results


def sweep(backends, selected):
    cells = []
    for backend in backends:
        env = dict(os.environ, KERAS_BACKEND=backend)
        command = [sys.executable, __file__, "--worker"]
        command += ["--cases", ",".join(selected)] if selected else []
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1800)
        reported = {}
        for line in done.stdout.splitlines():
            if line.startswith("{"):
                cell = json.loads(line)
                reported[cell["case"]] = cell
        for name, item, *_ in CASES:
            if selected and name not in selected:
                continue
            cell = reported.get(name, {"case": name, "item": item, "class": "crash",
                                       "detail": done.stderr[-300:]})  # fmt: skip
            cells.append(dict(cell, backend=backend))
    return cells


def table(cells, backends):
    rows = {}
    for cell in cells:
        rows.setdefault((cell["case"], cell["item"]), {})[cell["backend"]] = cell["class"]
    lines = ["| case | " + " | ".join(backends) + " |", "|---" * (len(backends) + 1) + "|"]
    for (_, item), by_backend in rows.items():
        lines.append(f"| {item} | " + " | ".join(by_backend.get(b, "") for b in backends) + " |")
    counts = {c: sum(cell["class"] == c for cell in cells) for c in CLASSES}
    lines.append("")
    lines.append(
        f"{len(rows)} cases × {len(backends)} backends = {len(cells)} cells: "
        + ", ".join(f"{counts[c]} {c}" for c in CLASSES)
    )
    return "\n".join(lines), counts


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--backend", default=",".join(BACKENDS), help="comma-separated")
    parser.add_argument("--cases", default="", help="comma-separated case names (all if empty)")
    parser.add_argument("--json", default=None, help="write every cell here")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    selected = [c for c in args.cases.split(",") if c]
    if args.worker:
        run_backend(selected)
        return
    backends = args.backend.split(",")
    cells = sweep(backends, selected)
    text, counts = table(cells, backends)
    print(text)
    for cell in cells:
        if cell["class"] not in ("handled", "clear error"):
            print(f"  {cell['backend']:10s} {cell['case']}: {cell['class']}: {cell['detail']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"cells": cells, "counts": counts}, f, indent=1)


if __name__ == "__main__":
    main()
