"""`VIDDistiller`: a `keras.Model` that trains a student with VID heads."""

import contextlib
import inspect
import numbers
import warnings

import keras
from keras import ops, tree
from keras.saving import deserialize_keras_object, serialize_keras_object

from keras_vid import backend as vid_backend
from keras_vid import compat
from keras_vid.arguments import (
    check_not_empty,
    non_negative,
    normalize_head_options,
    normalize_pairs,
)
from keras_vid.features import (
    LOGITS,
    check_channels_last,
    check_feature_trains,
    check_no_shared_layers,
    check_same_inputs,
    check_symbolic_model,
    feature_extractor,
    final_softmax,
    find_layer,
    layer_output,
    log_probabilities,
    mask_input_key,
    mask_key,
    output_index,
    pair_key,
    token_mask_source,
)
from keras_vid.losses import reduce_tokens, sigmoid_kl, softened_kl, weighted_batch_mean
from keras_vid.pair_suggestion import resolve_pairs
from keras_vid.step_guard import StepGuard
from keras_vid.task_kind import kd_kind, task_kind
from keras_vid.vid_head import VIDHead

# `head_options` keys: `VIDHead`'s own arguments.
HEAD_OPTIONS = tuple(
    name
    for name, parameter in inspect.signature(VIDHead.__init__).parameters.items()
    if name != "self" and parameter.kind is parameter.POSITIONAL_OR_KEYWORD
)
_FIT_SIGNATURE = inspect.signature(keras.Model.fit)


_NO_BATCHES = (
    "`{method}()` received an empty dataset: it yielded no batch, so there is nothing "
    "to train or evaluate on. Check the data split or the dataset's filters."
)


@contextlib.contextmanager
def no_batches_error(method):
    """An empty dataset of unknown length ends JAX's loop with a bare
    `StopIteration`: say what it means."""
    try:
        yield
    except StopIteration:
        raise ValueError(_NO_BATCHES.format(method=method)) from None


def _check_head_output(head, index, pair, student, teacher):
    """A pair loss must return one value per example; `(batch, 1)` would
    broadcast against the sample weights and weigh the term wrongly."""
    try:
        spec = head.compute_output_spec(student, teacher)
    except Exception:  # noqa: BLE001 - a head that cannot be traced is checked at run time
        return
    shape = tuple(getattr(spec, "shape", ()))
    if len(shape) != 1:
        raise ValueError(
            f"Pair {index} {pair}: the head '{head.name}' ({type(head).__name__}) returns "
            f"shape {shape}; a pair loss must return the per-example loss, shape (batch,). "
            "Reduce every other axis in its `call` (e.g. `ops.mean(..., axis=...)` without "
            "keepdims)."
        )


def _takes_padding_mask(head):
    """Whether a pair loss's `call` accepts `padding_mask`."""
    parameters = inspect.signature(head.call).parameters.values()
    return any(
        p.name == "padding_mask" or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters
    )


class _StepFeatures:
    """The paired features of the step being computed, which `compute_loss`
    reads (its signature is Keras's), and the label check it reports back."""

    features = None
    labels_ok = None


def _first_inputs(x, batch_size):
    """The inputs of the first batch of `fit`'s `x`: the first `batch_size`
    examples of arrays (or a dict or list of arrays), the first element of a
    `tf.data.Dataset`, `PyDataset` or DataLoader; `None` for data that cannot
    be read without consuming it (a generator)."""

    def inputs(element):
        return element[0] if isinstance(element, tuple) else element

    def unpack(element):  # a DataLoader yields lists
        return tuple(element) if isinstance(element, list) else element

    try:
        if isinstance(x, keras.utils.PyDataset):
            return inputs(x[0])
        leaves = tree.flatten(x)
        if leaves and all(hasattr(leaf, "shape") and len(leaf.shape) for leaf in leaves):
            return tree.map_structure(lambda a: a[:batch_size], x)
        if iter(x) is not x:  # re-iterable: tf.data.Dataset, a torch DataLoader
            return inputs(unpack(next(iter(x))))
    except (StopIteration, TypeError, IndexError):
        return None
    return None


@keras.saving.register_keras_serializable(package="keras_vid")
class VIDDistiller(keras.Model):
    """Distils a frozen teacher into a student with VID heads on layer pairs.

    For each pair `(student_layer, teacher_layer)` a `VIDHead` learns a
    Gaussian q(t | s) of the teacher feature given the student feature; the
    student is trained on

        task_loss + Σ_k λ_k · mean_batch(NLL_k) + kd_weight · KD

    The teacher is frozen (`trainable = False`) and runs once per step in
    inference mode, outside the differentiated computation. The student runs
    once per step: a single forward pass yields its logits and every paired
    feature. Gradients reach the student and the heads only.

    `call(x)` returns `student(x)` (its logits output alone when it has
    several), so `predict()` gives the student's outputs; after training,
    `distiller.student` is the plain student model.

    Inputs: the batch's `x` feeds both models, so they take the same input
    structure (one tensor, or a dict, list or nested structure of inputs)
    with the same shapes and dtypes, or the student takes a subset of the
    teacher's dict inputs, by key (it is given only those entries of `x`).
    A mismatch is refused at construction, naming the key and the shapes.

    Outputs: KD, the compiled loss and the metrics read each model's logits,
    its single output or the one `teacher_output` / `student_output` names.

    Token features `(batch, tokens, dim)` (transformers, KerasHub backbones)
    are paired token by token, and padded tokens are left out exactly: the
    NLL of such a pair (and KD on per-token logits) is averaged over the
    real tokens only (see `token_mask`). Per-token sample weights
    `(batch, tokens)` weigh the compiled loss as Keras does, and the VID
    and KD terms by each example's mean weight over its real tokens. The
    guide is `docs/multi_io.md`.

    Args:
        teacher: a trained functional or Sequential `keras.Model`.
        student: a functional or Sequential `keras.Model` taking the
            teacher's inputs or a subset of its dict inputs (see above).
        pairs: list of `(student_layer_name, teacher_layer_name)`, or
            `"auto"` for `keras_vid.suggest_pairs(teacher, student)` (stage
            ends matched by resolution). A name may be a path into a nested
            functional model, e.g. `"backbone/conv4_block6_out"`. A student
            penultimate (vector) layer paired with the teacher's logits layer
            is VID-LP. `[]` makes a pure KD distiller (`kd_weight > 0`).
        head_options: options for every `VIDHead` (`depth`, `hidden_width`,
            `use_batch_norm`, `init_variance`, `epsilon`, `reduction`,
            `learn_variance`, `min_variance`, `alpha_gradient_scale`): one dict
            for all pairs or a list with one dict per pair.
        heads: instead of `head_options`, one `keras_vid.PairLoss` per pair
            to use as its loss (other feature losses on the same training
            loop, such as attention transfer): `build(student_shape,
            teacher_shape)`, and `call(student, teacher, training=None)`
            returning a per-example loss of shape `(batch,)` (and, on a
            masked token pair, accepting `padding_mask=None`).
        teacher_output: which of the teacher's outputs is the logits: an
            output name (a key of its dict outputs, or the name of the layer
            that produces it) or an index into `teacher.outputs`; `None`
            (default) for a model with a single output.
        student_output: the same for the student.
        token_mask: where the `(batch, tokens)` padding mask of token pairs
            comes from (true or non-zero at real tokens). `"auto"` (default):
            the `"padding_mask"` entry of the teacher's dict inputs (the
            KerasHub convention) if it has one, else the Keras mask carried
            by the paired layers' outputs (the teacher's, else the
            student's; e.g. after `Embedding(mask_zero=True)`). A string
            names another key of the teacher's dict inputs; `None` switches
            masking off. A mask applies to the pairs of rank-3 features
            (both sides) whose token axis matches its length (unknown
            lengths are taken to match), and to KD on rank-3 logits.
        name: model name.

    Example:

    ```python
    distiller = VIDDistiller(teacher, student,
                             pairs=[("s_block2", "t_block2"), ("s_pool", "t_logits")])
    distiller.compile(optimizer="adam",
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"], vid_weight=1.0)
    distiller.fit(x, y, epochs=5)
    student = distiller.student
    ```
    """

    def __init__(
        self,
        teacher,
        student,
        pairs,
        head_options=None,
        heads=None,
        teacher_output=None,
        student_output=None,
        token_mask="auto",
        name="vid_distiller",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        check_symbolic_model(teacher, "teacher")
        check_symbolic_model(student, "student")
        if teacher is student:
            raise ValueError("The teacher and the student must be different models.")
        self._student_input_keys = check_same_inputs(teacher, student)
        check_no_shared_layers(teacher, student)
        t_index = output_index(teacher, teacher_output, "teacher", "teacher_output")
        s_index = output_index(student, student_output, "student", "student_output")
        self._student_output_index = s_index
        self._mask_input = mask_input_key(teacher, token_mask)
        self.teacher_output = teacher_output
        self.student_output = student_output
        self.token_mask = token_mask
        pairs = resolve_pairs(teacher, student, pairs)  # "auto": stage ends matched
        pairs = normalize_pairs(pairs)
        options = normalize_head_options(head_options, len(pairs), HEAD_OPTIONS)
        if heads is not None:
            if head_options is not None:
                raise ValueError("Pass either `head_options` or `heads`, not both.")
            if not isinstance(heads, (list, tuple)) or len(heads) != len(pairs):
                raise ValueError(
                    f"`heads` must be a list with one layer per pair ({len(pairs)}). "
                    f"Received: {heads!r}"
                )
            if not all(isinstance(head, keras.layers.Layer) for head in heads):
                raise ValueError("Every entry of `heads` must be a `keras.layers.Layer`.")

        teacher.trainable = False
        self.teacher = teacher
        self.student = student
        self.pairs = pairs
        self.head_options = head_options
        self._vid_custom_heads = heads is not None

        mask_tensor = None if self._mask_input is None else teacher.input[self._mask_input]
        student_features, teacher_features, built_heads = {}, {}, []
        self._mask_sources = {}  # extractor key -> None, "input", "teacher" or "student"
        for index, ((s_name, t_name), option) in enumerate(zip(pairs, options)):
            s_layer, t_layer = (
                find_layer(student, s_name, "student"),
                find_layer(teacher, t_name, "teacher"),
            )
            s_out = layer_output(s_layer, student, "student")
            t_out = layer_output(t_layer, teacher, "teacher")
            try:
                check_channels_last(s_layer, s_out, "student", s_name)
                check_channels_last(t_layer, t_out, "teacher", t_name)
                check_feature_trains(student, s_out, s_name)
            except ValueError as error:
                raise ValueError(f"Pair {index} {(s_name, t_name)}: {error}") from None
            student_features[pair_key(index)] = s_out
            teacher_features[pair_key(index)] = t_out
            source = token_mask_source(s_out, t_out, token_mask, mask_tensor)
            self._mask_sources[pair_key(index)] = source
            head = (
                heads[index] if heads is not None else VIDHead(name=f"vid_head_{index}", **option)
            )
            try:
                if not head.built:
                    head.build(s_out.shape, t_out.shape)
            except ValueError as error:
                raise ValueError(f"Pair {index} {(s_name, t_name)}: {error}") from None
            if heads is not None:
                _check_head_output(head, index, (s_name, t_name), s_out, t_out)
                if source is not None and not _takes_padding_mask(head):
                    raise ValueError(
                        f"Pair {index} {(s_name, t_name)}: the head '{head.name}' "
                        f"({type(head).__name__}) takes no `padding_mask`, but the pair's "
                        f"token features are masked (the mask comes from the {source}"
                        + (f" key {self._mask_input!r}" if source == "input" else "")
                        + "). Add `padding_mask=None` to its `call`, or pass "
                        "`token_mask=None` to switch masking off."
                    )
            built_heads.append(head)
        self.heads = built_heads
        self._mask_sources[LOGITS] = token_mask_source(
            student.outputs[s_index], teacher.outputs[t_index], token_mask, mask_tensor
        )
        self.student_extractor = feature_extractor(
            student,
            student_features,
            f"{student.name}_vid_features",
            output=s_index,
            masks=self._extractor_masks("student"),
        )
        teacher_softmax = final_softmax(teacher, t_index)
        if teacher_softmax is not None:
            warnings.warn(
                f"The teacher '{teacher.name}' ends in a softmax (layer "
                f"'{teacher_softmax}'): {self.name} uses its log-probabilities as the "
                "teacher's logits (the same softmax at every temperature) for KD and "
                "for pairs on that layer. Build the teacher without it (e.g. "
                "`classifier_activation=None`) to silence this.",
                stacklevel=2,
            )
        self.teacher_extractor = feature_extractor(
            teacher,
            teacher_features,
            f"{teacher.name}_vid_features",
            softmax_output=teacher_softmax is not None,
            output=t_index,
            masks=self._extractor_masks("teacher"),
        )
        self._student_softmax = final_softmax(student, s_index)
        self._teacher_logits_shape = tuple(teacher.outputs[t_index].shape)
        self._student_logits_shape = tuple(student.outputs[s_index].shape)

        self.vid_weights = self.add_weight(
            name="vid_weights", shape=(len(pairs),), initializer="ones", trainable=False
        )
        self.kd_weight = self.add_weight(
            name="kd_weight", shape=(), initializer="zeros", trainable=False
        )
        self.task_weight = self.add_weight(
            name="task_weight", shape=(), initializer="ones", trainable=False
        )
        self.step_guard = StepGuard(
            pairs,
            classes=self._student_logits_shape[-1],
            state_variables=self._step_state_variables,
        )
        self.step_guard.build()
        self.task_loss_tracker = keras.metrics.Mean(name="task_loss")
        self.vid_loss_trackers = [
            keras.metrics.Mean(name=f"vid_{index}") for index in range(len(pairs))
        ]
        self.kd_loss_tracker = keras.metrics.Mean(name="kd_loss")
        self.temperature = 4.0
        self._kd_kind = "softmax"
        self._kd_scheduled = False
        self._vid_compile_args = {}
        self._vid_jit_compile = "auto"
        self._vid_use_task_loss = True
        self._step = _StepFeatures()
        self.built = True

    # ------------------------------------------------------------------ compile

    def compile(
        self,
        optimizer="rmsprop",
        loss=None,
        metrics=None,
        vid_weight=3.0,
        kd_weight=0.0,
        temperature=4.0,
        alpha_weight_decay=False,
        task_weight=1.0,
        **kwargs,
    ):
        """Configure training; arguments beyond `keras.Model.compile`'s:

        Args:
            vid_weight: λ, one float for all pairs or a list with one per pair
                (default 3: on the standardised teacher features of the
                default `VIDHead`, the feature-matching strength that was
                best on CIFAR-10, measured on validation splits of several
                tasks in `benchmarks/accuracy/`; the PyTorch references use 1).
            kd_weight: weight of Hinton's KD term on the logits
                (T² · KL of the softened softmaxes); 0 disables it.
            temperature: softmax temperature T of the KD term.
            alpha_weight_decay: apply the optimizer's weight decay to the
                heads' α as well. Off by default: decay on α biases σ.
            task_weight: weight of the task loss (the compiled loss plus the
                models' regularization losses), default 1. Scaling the task
                term down is not the same as scaling the VID terms up: the
                learning rate of everything else stays as it is. The
                TensorFlow reproduction of the paper trains on
                `0.1·CE + Σ VID`, i.e. `task_weight=0.1`.
        """
        num_pairs = len(self.pairs)
        if isinstance(vid_weight, (list, tuple)):
            if len(vid_weight) != num_pairs:
                raise ValueError(
                    f"`vid_weight` has {len(vid_weight)} values but there are "
                    f"{num_pairs} pairs: pass one float, or one per pair."
                )
            vid_weights = [non_negative(w, f"vid_weight[{i}]") for i, w in enumerate(vid_weight)]
        else:
            vid_weights = [non_negative(vid_weight, "vid_weight")] * num_pairs
        kd_weight = non_negative(kd_weight, "kd_weight")
        task_weight = non_negative(task_weight, "task_weight")
        if (
            isinstance(temperature, bool)
            or not isinstance(temperature, numbers.Real)
            or not (0 < temperature < float("inf"))
        ):
            raise ValueError(
                f"`temperature` must be a finite number > 0. Received: temperature={temperature!r}"
            )

        if not self.pairs and kd_weight == 0:
            raise ValueError(
                f"{self.name} has no layer pairs (`pairs=[]`), so it distils only "
                "through the KD term: pass `kd_weight` > 0 to `compile()`. Received: "
                "kd_weight=0."
            )
        kind = task_kind(loss)
        self._kd_kind = kd_kind(kind, self._student_logits_shape[-1])
        if kd_weight > 0 and self._kd_kind is None:
            raise ValueError(
                f"KD distils the teacher's output distribution, but the loss "
                f"{getattr(loss, 'name', loss)!r} trains a regression: there is no "
                f"distribution to soften. Received: kd_weight={kd_weight}. Use kd_weight=0 "
                "(the VID pairs need no labels and work for regression), or pair the "
                "teacher's and the student's outputs as a VID pair to distil them."
            )
        if kd_weight > 0:
            self._check_kd_logits(kd_weight)
        if self._student_softmax is not None and getattr(loss, "from_logits", False):
            raise ValueError(
                f"The student '{self.student.name}' ends in a softmax (layer "
                f"'{self._student_softmax}'), so it outputs probabilities, but the loss "
                f"{type(loss).__name__} was built with from_logits=True. Build the student "
                "without the softmax (its last layer with activation=None), or pass "
                "from_logits=False."
            )
        self.step_guard.sparse_labels = kind == "sparse"
        self.step_guard.binary_labels = kind == "binary"
        super().compile(optimizer=optimizer, loss=loss, metrics=metrics, **kwargs)
        self._vid_jit_compile = kwargs.get("jit_compile", "auto")
        self.vid_weights.assign(vid_weights)
        self.kd_weight.assign(kd_weight)
        self.task_weight.assign(task_weight)
        self.temperature = float(temperature)
        self._vid_use_task_loss = loss is not None
        self._vid_compile_args = {
            "vid_weight": list(vid_weight)
            if isinstance(vid_weight, (list, tuple))
            else vid_weight,
            "kd_weight": kd_weight,
            "temperature": self.temperature,
            "alpha_weight_decay": bool(alpha_weight_decay),
            "task_weight": task_weight,
        }
        if not alpha_weight_decay:
            self._exclude_alphas_from_weight_decay()

    def _check_kd_logits(self, kd_weight):
        """KD compares the two logits element by element: their shapes must agree."""
        t_shape, s_shape = self._teacher_logits_shape, self._student_logits_shape
        if t_shape[-1] != s_shape[-1]:
            raise ValueError(
                f"KD compares the teacher's and the student's logits, but the teacher "
                f"'{self.teacher.name}' has {t_shape[-1]} output classes and the student "
                f"'{self.student.name}' {s_shape[-1]}. Received: kd_weight={kd_weight}. "
                "Use kd_weight=0 (VID pairs need no equal class counts) or give both "
                "models the same classes."
            )
        if len(t_shape) != len(s_shape) or not all(
            a is None or b is None or a == b for a, b in zip(t_shape[1:], s_shape[1:])
        ):
            raise ValueError(
                "KD compares the teacher's and the student's logits element by element, so "
                f"their shapes must agree. Received: teacher '{self.teacher.name}' logits "
                f"shape {t_shape}, student '{self.student.name}' logits shape {s_shape}, "
                f"kd_weight={kd_weight}."
            )

    def _exclude_alphas_from_weight_decay(self):
        optimizer = getattr(self.optimizer, "inner_optimizer", self.optimizer)
        if getattr(optimizer, "weight_decay", None) in (None, 0):
            return
        alphas = [head.alpha for head in self.heads if getattr(head, "alpha", None) is not None]
        if not alphas:
            return
        if getattr(optimizer, "built", False):
            excluded, _ = compat.weight_decay_exclusions(optimizer)
            if not all(compat.optimizer_variable_key(optimizer, a) in excluded for a in alphas):
                warnings.warn(
                    "The optimizer was built before `compile`, so the heads' α could not "
                    "be excluded from its weight decay. Pass a fresh optimizer.",
                    stacklevel=3,
                )
            return
        compat.add_weight_decay_exclusions(optimizer, alphas)

    def get_compile_config(self):
        config = super().get_compile_config()
        if config is not None:
            config.update(self._vid_compile_args)
            # What the user asked for, not what this backend resolved "auto" to
            # (JAX resolves it to True, which would turn torch.compile on).
            config["jit_compile"] = self._vid_jit_compile
        return config

    def compile_from_config(self, config):
        config = deserialize_keras_object(config)
        self.compile(**config)
        if self.built and getattr(self, "optimizer", None) is not None:
            self.optimizer.build(self.trainable_variables)

    # ---------------------------------------------------------------- the step

    @property
    def _logs_kd(self):
        """Whether the KD term is computed (and `kd_loss` tracked): when compiled
        with `kd_weight > 0`, or when a `WeightSchedule` of `fit` sets it."""
        return bool(self._vid_compile_args.get("kd_weight")) or self._kd_scheduled

    @property
    def metrics(self):
        metrics = super().metrics
        if not self._logs_kd:
            metrics = [m for m in metrics if m is not self.kd_loss_tracker]
        return metrics

    def call(self, inputs, training=None):
        outputs = self.student(self._student_inputs(inputs), training=training)
        if len(self.student.outputs) > 1:  # the logits, which the compiled loss reads
            return tree.flatten(outputs)[self._student_output_index]
        return outputs

    def _student_inputs(self, x):
        """The entries of `x` the student reads: all of them, or, for a student
        on a subset of the teacher's dict inputs, its keys."""
        keys = self._student_input_keys
        if keys is None:
            return x
        if not isinstance(x, dict):
            raise ValueError(
                f"The student '{self.student.name}' reads the inputs {keys} of x by key, so x "
                f"must be a dict. Received: x of type {type(x).__name__}"
            )
        return {key: x[key] for key in keys}

    def _extractor_masks(self, role):
        """The extractor keys whose Keras mask the `role` extractor returns."""
        return [key for key, source in self._mask_sources.items() if source == role]

    def _token_mask(self, key, x, student_outputs, teacher_outputs):
        """The padding mask of extractor output `key` in this step, or `None`."""
        source = self._mask_sources[key]
        if source == "input":
            return x[self._mask_input]
        if source == "teacher":
            return teacher_outputs[mask_key(key)]
        if source == "student":
            return student_outputs[mask_key(key)]
        return None

    @property
    def distillation_config(self):
        """The arguments `compile()` received beyond `keras.Model.compile`'s
        (`vid_weight`, `kd_weight`, `temperature`, `alpha_weight_decay`,
        `task_weight`); empty before `compile()`."""
        return dict(self._vid_compile_args)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """The total loss, as `keras.Model.compute_loss`:

            task_weight · task + Σ_k λ_k · mean_batch(NLL_k) + kd_weight · KD

        `task` is the compiled loss on the student's logits `y_pred` plus the
        models' regularization and `add_loss` losses (without labels or a
        compiled loss, the latter only). It also updates the `task_loss`,
        `vid_<k>` and `kd_loss` trackers, as Keras's documented override
        does with its own tracker. Inside a training or evaluation step the
        paired features come from that step's single forward pass; called on
        its own, both models run on `x`. Under a `tf.distribute` strategy the
        total is divided by the replicas in sync, as Keras's is.

        A subclass may override it as any Keras model's, e.g.
        `return super().compute_loss(x, y, y_pred, sample_weight, training) + extra`.
        """
        if self._step.features is not None:
            student_outputs, teacher_outputs = self._step.features
        else:
            student_outputs = self.student_extractor(self._student_inputs(x), training=training)
            teacher_outputs = tree.map_structure(ops.stop_gradient, self._teacher_features(x))
        logits = student_outputs[LOGITS] if y_pred is None else y_pred
        y, labels_ok = self.step_guard.check_labels(y)
        self._step.labels_ok = labels_ok
        # A batch with labels outside the classes has no defined loss.
        task = ops.where(
            labels_ok,
            ops.cast(self._task_loss(x, y, logits, sample_weight, training), "float32"),
            float("nan"),
        )
        batch_size = ops.shape(logits)[0]
        self.task_loss_tracker.update_state(
            compat.unscale_loss_for_distribution(task), sample_weight=batch_size
        )
        distillation = ops.zeros((), "float32")
        example_weight = self._example_weights(sample_weight, x, student_outputs, teacher_outputs)
        for index, (head, tracker) in enumerate(zip(self.heads, self.vid_loss_trackers)):
            key = pair_key(index)
            mask = self._token_mask(key, x, student_outputs, teacher_outputs)
            masking = {} if mask is None else {"padding_mask": mask}
            nll = head(student_outputs[key], teacher_outputs[key], training=training, **masking)
            nll = ops.cast(nll, "float32")  # a custom head may answer in half precision
            vid = weighted_batch_mean(nll, example_weight)
            tracker.update_state(vid, sample_weight=batch_size)
            distillation = distillation + ops.cast(self.vid_weights[index], "float32") * vid
        if self._logs_kd:
            student_logits = log_probabilities(logits) if self._student_softmax else logits
            kd_term = sigmoid_kl if self._kd_kind == "sigmoid" else softened_kl
            kd = kd_term(teacher_outputs[LOGITS], student_logits, self.temperature)
            if len(kd.shape) > 1:  # per-token logits: the mean over the (real) tokens
                mask = self._token_mask(LOGITS, x, student_outputs, teacher_outputs)
                kd = reduce_tokens(kd, mask)
            kd = weighted_batch_mean(kd, example_weight)
            self.kd_loss_tracker.update_state(kd, sample_weight=batch_size)
            distillation = distillation + ops.cast(self.kd_weight, "float32") * kd
        return ops.cast(self.task_weight, "float32") * task + (
            compat.scale_loss_for_distribution(distillation)
        )

    def _example_weights(self, sample_weight, x, student_outputs, teacher_outputs):
        """The per-example weights of the VID and KD terms. Per-token sample
        weights `(batch, tokens)` (KerasHub's causal LMs weigh the tokens by
        their padding mask) become each example's mean weight over its real
        tokens (over all of them without a mask), so a padding-mask weight
        is 1 for every example with a real token."""
        if sample_weight is None:
            return None
        weight = ops.cast(sample_weight, "float32")
        if len(weight.shape) < 2 or all(d == 1 for d in weight.shape[1:]):
            return weight
        if len(weight.shape) > 2:
            return ops.mean(weight, axis=tuple(range(1, len(weight.shape))))
        mask = self._token_mask(LOGITS, x, student_outputs, teacher_outputs)
        if mask is None and self._mask_input is not None:
            mask = x[self._mask_input]
        if mask is not None and len(mask.shape) == 2:
            known = (weight.shape[1], mask.shape[1])
            if None not in known and known[0] != known[1]:
                mask = None
        return reduce_tokens(weight, mask)

    def _task_loss(self, x, y, y_pred, sample_weight, training):
        """The compiled loss plus the regularization losses (Keras's total);
        without labels or a compiled loss, the regularization losses alone."""
        if y is not None and self._vid_use_task_loss:
            return super().compute_loss(x, y, y_pred, sample_weight, training)
        losses = [compat.aggregate_additional_loss(self, loss) for loss in self.losses]
        return ops.sum(ops.stack(losses)) if losses else ops.zeros((), "float32")

    # The three hooks of the backends' steps (`keras_vid.backend`).

    def _teacher_features(self, x):
        """The teacher's logits and paired features (inference mode)."""
        return self.teacher_extractor(x, training=False)

    def _forward_loss(self, x, y, sample_weight, teacher_outputs, training):
        """One student pass and `compute_loss` on it: `(loss, student_outputs,
        labels_ok)`, the last for the step guard."""
        student_outputs = self.student_extractor(self._student_inputs(x), training=training)
        self._step.features = (student_outputs, teacher_outputs)
        self._step.labels_ok = None
        try:
            loss = self.compute_loss(
                x, y, student_outputs[LOGITS], sample_weight, training=training
            )
            labels_ok = self._step.labels_ok
        finally:
            self._step.features = self._step.labels_ok = None
        if labels_ok is None:  # an override that does not call `super().compute_loss`
            labels_ok = ops.convert_to_tensor(True)
        return loss, student_outputs, labels_ok

    def _log_step(self, x, y, sample_weight, student_outputs, loss):
        """Update the `loss` tracker and the compiled metrics; return the logs."""
        logits = student_outputs[LOGITS]
        compat.loss_tracker(self).update_state(
            compat.unscale_loss_for_distribution(loss), sample_weight=ops.shape(logits)[0]
        )
        return self.compute_metrics(x, y, logits, sample_weight)

    def _step_state_variables(self):
        """The non-trainable variables a training step's forward pass may change
        (BatchNorm statistics, seed states of the student and the heads); a
        skipped step puts them back."""
        variables = list(self.student.non_trainable_variables)
        for head in self.heads:
            variables += head.non_trainable_variables
        return variables

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        """Compiled metrics on the student's logits, and every loss tracker.
        Without labels the compiled metrics are left out of the logs."""
        if y is not None:
            return super().compute_metrics(x, y, y_pred, sample_weight)
        return self.get_metrics_result(labelled=False)

    def get_metrics_result(self, labelled=True):
        """As `keras.Model`'s, leaving out compiled metrics that were never
        built, and with `labelled=False` (a step without labels) every
        compiled metric, whose value would be stale."""
        logs = {}
        compiled = compat.compiled_metrics(self)
        for metric in self.metrics:
            if not labelled and metric is compiled:
                continue
            if getattr(metric, "built", True):
                result = metric.result()
                logs.update(result if isinstance(result, dict) else {metric.name: result})
        return logs

    def fit(self, *args, **kwargs):
        """`keras.Model.fit`, adding a `NonFiniteMonitor` unless `callbacks`
        already has one, so skipped steps are reported."""
        from keras_vid.callbacks.non_finite import NonFiniteMonitor

        arguments = _FIT_SIGNATURE.bind(self, *args, **kwargs).arguments
        x, y = arguments.get("x"), arguments.get("y")
        check_not_empty(x, "fit")
        self.step_guard.check_label_array(y, "fit")
        self.step_guard.check_dataset_labels(x, "fit")
        validation = arguments.get("validation_data")
        if isinstance(validation, (tuple, list)) and len(validation) >= 2:
            self.step_guard.check_label_array(validation[1], "fit", "validation_data")
        elif validation is not None:
            self.step_guard.check_dataset_labels(validation, "fit", "validation_data")
        self._keep_teacher_frozen()
        self._schedule_kd(arguments.get("callbacks"))
        self._calibrate_from(x, arguments.get("batch_size"))
        callbacks = arguments.get("callbacks")
        if callbacks is None or isinstance(callbacks, (list, tuple)):
            callbacks = list(callbacks or [])
            if not any(isinstance(c, NonFiniteMonitor) for c in callbacks):
                callbacks.append(NonFiniteMonitor())
            arguments["callbacks"] = callbacks
        arguments.pop("self")
        extra = arguments.pop("kwargs", {})
        with no_batches_error("fit"):
            return super().fit(**arguments, **extra)

    def _schedule_kd(self, callbacks):
        """Compute the KD term when a `WeightSchedule` of this `fit` sets its
        weight, even if `compile()` had `kd_weight=0` (a curriculum that starts
        KD later): checked as `compile` checks it, and the step re-traced."""
        from keras_vid.callbacks.weight_schedule import WeightSchedule

        scheduled = any(isinstance(c, WeightSchedule) and c.schedules_kd for c in callbacks or ())
        if not scheduled or self._kd_scheduled:
            return
        if self._kd_kind is None:
            raise ValueError(
                "A WeightSchedule sets `kd_weight`, but the compiled loss trains a "
                "regression, which has no output distribution to distil. Schedule "
                "`vid_weight` only."
            )
        self._check_kd_logits("scheduled")
        self._kd_scheduled = True
        self.train_function = self.test_function = None  # traced without the KD term

    def _keep_teacher_frozen(self):
        """Freeze the teacher again if it was made trainable after construction:
        with trainable teacher weights the optimizer would track them, and a
        decoupled weight decay would move them although no gradient reaches
        them."""
        if self.teacher.trainable_weights:
            warnings.warn(
                f"The teacher '{self.teacher.name}' was made trainable after it was "
                f"given to {self.name}; the teacher of a distiller stays frozen (its "
                "weights and BatchNorm statistics are not trained). Setting "
                "`teacher.trainable = False` again.",
                stacklevel=3,
            )
            self.teacher.trainable = False

    def train_on_batch(self, x, *args, **kwargs):
        self._keep_teacher_frozen()
        self._calibrate_from(x)
        return super().train_on_batch(x, *args, **kwargs)

    def calibrate(self, x):
        """Set the teacher statistics of every head that normalises the
        teacher feature (`VIDHead(normalize_teacher=True)`) from the teacher's
        features on the inputs `x`, and fix them. `fit` and `train_on_batch`
        do it on their first data; call it yourself in a custom loop, or to
        use other data."""
        heads = [
            (index, head)
            for index, head in enumerate(self.heads)
            if getattr(head, "normalize_teacher", False)
            and self._mask_sources[pair_key(index)] != "student"
        ]
        if not heads:
            return
        teacher_outputs = self._teacher_features(x)
        for index, head in heads:
            key = pair_key(index)
            mask = self._token_mask(key, x, {}, teacher_outputs)
            mean, variance = head.statistics_of(teacher_outputs[key], padding_mask=mask)
            # Each PyTorch DDP process sees its slice: average the moments.
            mean_square = vid_backend.process_mean(variance + ops.square(mean))
            mean = vid_backend.process_mean(mean)
            head.set_statistics(mean, ops.maximum(mean_square - ops.square(mean), 0.0))

    def _calibrate_from(self, x, batch_size=None):
        """`calibrate` on the first batch of `fit`'s data, before the first
        step, when a head's statistics are not fixed yet: on the global batch
        (averaged over the processes of a PyTorch DDP run), so data-parallel
        training matches a single device. Data that cannot be peeked at (a
        generator) is left to the heads, which average their first batches'
        statistics in the step."""
        if all(getattr(head, "calibrated", True) for head in self.heads):
            return
        sample = _first_inputs(x, batch_size or 32)
        if sample is not None:
            self.calibrate(sample)

    @property
    def losses(self):
        """The losses added by the student and the heads (`add_loss`, activity
        and weight regularizers); the frozen teacher's are left out: they carry
        no gradient and would only inflate the logged task loss."""
        teacher_layers = {id(layer) for layer in compat.sublayers(self.teacher)}
        teacher_layers.add(id(self.teacher))
        losses = compat.own_losses(self)
        for layer in compat.sublayers(self):
            if id(layer) not in teacher_layers:
                losses.extend(compat.own_losses(layer))
        return losses + compat.regularization_losses(self)

    def evaluate(self, x=None, y=None, *args, **kwargs):
        check_not_empty(x, "evaluate")
        self.step_guard.check_label_array(y, "evaluate")
        self.step_guard.check_dataset_labels(x, "evaluate")
        with no_batches_error("evaluate"):
            logs = super().evaluate(x, y, *args, **kwargs)
        if logs == {} or logs == []:  # TensorFlow's answer to a dataset that yielded nothing
            raise ValueError(_NO_BATCHES.format(method="evaluate"))
        return logs

    def train_step(self, *args):
        return vid_backend.train_step(self, *args)

    def test_step(self, *args):
        return vid_backend.test_step(self, *args)

    # ----------------------------------------------------------- serialization

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "teacher": serialize_keras_object(self.teacher),
                "student": serialize_keras_object(self.student),
                "pairs": [list(pair) for pair in self.pairs],
                "head_options": self.head_options,
                "heads": (
                    [serialize_keras_object(head) for head in self.heads]
                    if self._vid_custom_heads
                    else None
                ),
                "teacher_output": self.teacher_output,
                "student_output": self.student_output,
                "token_mask": self.token_mask,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["teacher"] = deserialize_keras_object(config["teacher"])
        config["student"] = deserialize_keras_object(config["student"])
        if config.get("heads") is not None:
            config["heads"] = [deserialize_keras_object(head) for head in config["heads"]]
        return cls(**config)
