"""`VIDDistiller`: a `keras.Model` that trains a student with VID heads.

The distiller wires the parts together and owns the loss; each part lives in
its own module: the pairs (`distillation_pair`), the compile settings
(`distillation_settings`), the padding masks (`token_masks`), the checks
before `fit` (`fit_checks`) and inside the step (`step_guard`), and the
training step of each backend (`backend`).
"""

import keras
from keras import ops, tree
from keras.saving import deserialize_keras_object, serialize_keras_object

from keras_vid import compat
from keras_vid.distillation_settings import (
    DistillationSettings,
    check_kd_logits,
    exclude_from_weight_decay,
)
from keras_vid.extractors import log_probabilities
from keras_vid.features import LOGITS, select_inputs
from keras_vid.losses import kd_per_example, weighted_batch_mean
from keras_vid.step_guard import StepGuard
from keras_vid.trainer import DistillerTrainer
from keras_vid.wiring import wire


class _StepFeatures:
    """The features of the step being computed, which `compute_loss` reads
    (its signature is Keras's, so a subclass can override it as any model's),
    and the label check it reports back."""

    features = None
    labels_ok = None


@keras.saving.register_keras_serializable(package="keras_vid")
class VIDDistiller(DistillerTrainer):
    """Distils a frozen teacher into a student with VID heads on layer pairs.

    For each pair `(student_layer, teacher_layer)` a `VIDHead` learns a
    Gaussian q(t | s) of the teacher feature given the student feature; the
    student is trained on

        task_loss + Σ_k λ_k · mean_batch(NLL_k) + kd_weight · KD

    The teacher is frozen and runs once per step in inference mode, outside
    the differentiated computation; the student runs once per step, and one
    pass yields its logits and every paired feature. `call(x)` (so
    `predict()`) returns the student's logits; after training,
    `distiller.student` is the plain student model.

    Both models read the batch's `x` (one tensor or the same structure of
    inputs), or the student reads a subset of the teacher's dict inputs by
    key. KD, the compiled loss and the metrics read each model's logits (its
    single output, or the one `teacher_output` / `student_output` names).
    Token features `(batch, tokens, dim)` are paired token by token and
    padded tokens are left out exactly (`token_mask`; `docs/multi_io.md`).

    Args:
        teacher: a trained functional or Sequential `keras.Model`.
        student: a functional or Sequential `keras.Model` taking the
            teacher's inputs or a subset of its dict inputs.
        pairs: list of `(student_layer_name, teacher_layer_name)`, or
            `"auto"` for `keras_vid.suggest_pairs(teacher, student)`. A name
            may be a path into a nested model (`"backbone/conv4_block6_out"`).
            A student vector layer paired with the teacher's logits layer is
            VID-LP. `[]` makes a pure KD distiller (`kd_weight > 0`).
        head_options: `VIDHead` options, one dict for all pairs or one per pair.
        heads: instead, one `keras_vid.PairLoss` per pair (e.g. attention
            transfer): `build(student_shape, teacher_shape)`, and `call(student,
            teacher, training=None)` returning the per-example loss `(batch,)`
            (on a masked token pair, accepting `padding_mask=None`).
        teacher_output: which teacher output is the logits: an output name or
            an index into `teacher.outputs`; `None` for a single output.
        student_output: the same for the student.
        token_mask: where the `(batch, tokens)` padding mask of token pairs
            comes from: `"auto"` (the teacher's `"padding_mask"` input if it
            has one, else the Keras mask the paired outputs carry), another
            input key, or `None` (no masking).
        name: model name.

    Example:

    ```python
    distiller = VIDDistiller(teacher, student,
                             pairs=[("s_block2", "t_block2"), ("s_pool", "t_logits")])
    distiller.compile(optimizer="adam",
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])
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
        wiring = wire(
            teacher, student, pairs, head_options, heads, teacher_output, student_output,
            token_mask, self.name,
        )  # fmt: skip
        self.teacher, self.student, self.pairs = teacher, student, wiring.pairs
        self.head_options, self.token_mask = head_options, token_mask
        self.teacher_output, self.student_output = teacher_output, student_output
        self._vid_custom_heads = heads is not None
        self.distillation_pairs = wiring.records
        self.heads = [record.head for record in wiring.records]
        self.token_masks = wiring.token_masks
        self.student_extractor = wiring.student_extractor
        self.teacher_extractor = wiring.teacher_extractor
        self._student_input_keys = wiring.student_input_keys
        self._student_output_index = wiring.student_output_index
        self._student_softmax = wiring.student_softmax
        self._teacher_logits_shape = wiring.teacher_logits_shape
        self._student_logits_shape = wiring.student_logits_shape
        self.vid_weights = self.add_weight(
            name="vid_weights", shape=(len(self.pairs),), initializer="ones", trainable=False
        )
        self.kd_weight = self.add_weight(
            name="kd_weight", shape=(), initializer="zeros", trainable=False
        )
        self.task_weight = self.add_weight(
            name="task_weight", shape=(), initializer="ones", trainable=False
        )
        classes = self._student_logits_shape[-1]
        self.step_guard = StepGuard(
            self.pairs, classes=classes, state_variables=self._step_state_variables
        )
        self.step_guard.build()
        self.task_loss_tracker = keras.metrics.Mean(name="task_loss")
        self.vid_loss_trackers = [record.tracker for record in wiring.records]
        self.kd_loss_tracker = keras.metrics.Mean(name="kd_loss")
        self.settings = DistillationSettings.uncompiled(len(self.pairs), classes)
        self._step = _StepFeatures()
        self.built = True

    @property
    def _mask_sources(self):
        return dict(self.token_masks.sources)

    @property
    def temperature(self):
        """The KD temperature T (`compile(temperature=...)`)."""
        return self.settings.temperature

    @property
    def distillation_config(self):
        """The arguments `compile()` received beyond `keras.Model.compile`'s
        (`vid_weight`, `kd_weight`, `temperature`, `alpha_weight_decay`,
        `task_weight`); empty before `compile()`."""
        return self.settings.config()

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
                best on validation splits of several tasks in
                `benchmarks/accuracy/`; the PyTorch references use 1).
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
        settings = DistillationSettings(
            len(self.pairs), self._student_logits_shape[-1], vid_weight, kd_weight,
            temperature, alpha_weight_decay, task_weight, loss,
            kwargs.get("jit_compile", "auto"),
        )  # fmt: skip
        if settings.computes_kd:
            self._check_kd_logits(settings.kd_weight)
        if self._student_softmax is not None and getattr(loss, "from_logits", False):
            raise ValueError(
                f"The student '{self.student.name}' ends in a softmax (layer "
                f"'{self._student_softmax}'), so it outputs probabilities, but the loss "
                f"{type(loss).__name__} was built with from_logits=True. Build the student "
                "without the softmax (its last layer with activation=None), or pass "
                "from_logits=False."
            )
        self.step_guard.sparse_labels = settings.task_kind == "sparse"
        self.step_guard.binary_labels = settings.task_kind == "binary"
        super().compile(optimizer=optimizer, loss=loss, metrics=metrics, **kwargs)
        self.settings = settings
        self.vid_weights.assign(settings.vid_weights)
        self.kd_weight.assign(settings.kd_weight)
        self.task_weight.assign(settings.task_weight)
        if not alpha_weight_decay:
            alphas = [h.alpha for h in self.heads if getattr(h, "alpha", None) is not None]
            exclude_from_weight_decay(self.optimizer, alphas)

    def _check_kd_logits(self, received):
        check_kd_logits(
            self.teacher, self.student, self._teacher_logits_shape,
            self._student_logits_shape, received,
        )  # fmt: skip

    def get_compile_config(self):
        config = super().get_compile_config()
        if config is not None:
            config.update(self.settings.config())
            # What the user asked for, not what this backend resolved "auto" to
            # (JAX resolves it to True, which would turn torch.compile on).
            config["jit_compile"] = self.settings.jit_compile
        return config

    def compile_from_config(self, config):
        config = deserialize_keras_object(config)
        self.compile(**config)
        if self.built and getattr(self, "optimizer", None) is not None:
            self.optimizer.build(self.trainable_variables)

    # ---------------------------------------------------------------- the loss

    def call(self, inputs, training=None):
        outputs = self.student(self._student_inputs(inputs), training=training)
        if len(self.student.outputs) > 1:  # the logits, which the compiled loss reads
            return tree.flatten(outputs)[self._student_output_index]
        return outputs

    def _student_inputs(self, x):
        """The entries of `x` the student reads."""
        return select_inputs(x, self._student_input_keys, self.student.name)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """The total loss, as `keras.Model.compute_loss`:

            task_weight · task + Σ_k λ_k · mean_batch(NLL_k) + kd_weight · KD

        `task` is the compiled loss on the student's logits `y_pred` plus the
        models' regularization and `add_loss` losses (without labels or a
        compiled loss, the latter only). It updates the `task_loss`, `vid_<k>`
        and `kd_loss` trackers, as Keras's documented override does with its
        own. Inside a step the features come from that step's single forward
        pass; called on its own, both models run on `x`. Under a
        `tf.distribute` strategy the total is divided by the replicas in sync,
        as Keras's is. A subclass may override it as any Keras model's, e.g.
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
        self.task_loss_tracker.update_state(
            compat.unscale_loss_for_distribution(task), sample_weight=ops.shape(logits)[0]
        )
        masks = self.token_masks
        weight = masks.example_weights(sample_weight, x, student_outputs, teacher_outputs)
        distillation = ops.zeros((), "float32")
        for pair in self.distillation_pairs:
            mask = masks.mask(pair.key, x, student_outputs, teacher_outputs)
            vid = pair.loss(student_outputs, teacher_outputs, mask, weight, training)
            distillation = distillation + ops.cast(self.vid_weights[pair.index], "float32") * vid
        if self.settings.computes_kd:
            mask = masks.mask(LOGITS, x, student_outputs, teacher_outputs)
            kd = self._kd_loss(teacher_outputs[LOGITS], logits, mask, weight)
            distillation = distillation + ops.cast(self.kd_weight, "float32") * kd
        return ops.cast(self.task_weight, "float32") * task + (
            compat.scale_loss_for_distribution(distillation)
        )

    def _kd_loss(self, teacher_logits, logits, mask, example_weight):
        """The batch-mean KD term, also given to the `kd_loss` tracker."""
        student_logits = log_probabilities(logits) if self._student_softmax else logits
        settings = self.settings
        kd = kd_per_example(
            teacher_logits, student_logits, settings.kd_kind, settings.temperature, mask
        )
        kd = weighted_batch_mean(kd, example_weight)
        self.kd_loss_tracker.update_state(kd, sample_weight=ops.shape(logits)[0])
        return kd

    def _task_loss(self, x, y, y_pred, sample_weight, training):
        """The compiled loss plus the regularization losses (Keras's total);
        without labels or a compiled loss, the regularization losses alone."""
        if y is not None and self.settings.use_task_loss:
            return super().compute_loss(x, y, y_pred, sample_weight, training)
        losses = [compat.aggregate_additional_loss(self, loss) for loss in self.losses]
        return ops.sum(ops.stack(losses)) if losses else ops.zeros((), "float32")

    @property
    def losses(self):
        """The losses added by the student and the heads (`add_loss`, activity
        and weight regularizers); the frozen teacher's are left out: they carry
        no gradient and would only inflate the logged task loss."""
        return compat.losses_without(self, self.teacher)

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

    # ----------------------------------------------------------- serialization

    def get_config(self):
        config = super().get_config()
        heads = [serialize_keras_object(h) for h in self.heads] if self._vid_custom_heads else None
        config.update(
            {
                "teacher": serialize_keras_object(self.teacher),
                "student": serialize_keras_object(self.student),
                "pairs": [list(pair) for pair in self.pairs],
                "head_options": self.head_options,
                "heads": heads,
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
