"""`VIDHead` alone in a hand-written training loop.

For users who keep their own loop and only want the VID loss: the loss is
written once with Keras layers and `keras.ops`; only the three-line gradient
step differs per backend (as in your own loop). Runs with
`KERAS_BACKEND=tensorflow`, `jax` or `torch`:

    python examples/custom_loop.py

The teacher is a fixed random network here; the point is the loop.
"""

import keras
import numpy as np
from keras import ops

from keras_vid import VIDHead

BACKEND = keras.backend.backend()


def make_step(loss_fn, variables, optimizer):
    """One optimizer step on `loss_fn(*batch) -> (loss, aux)` for this backend."""
    if BACKEND == "tensorflow":
        import tensorflow as tf

        def step(*batch):
            with tf.GradientTape() as tape:
                loss, aux = loss_fn(*batch)
            optimizer.apply(tape.gradient(loss, variables), variables)
            return loss, aux

    elif BACKEND == "torch":
        import torch

        def step(*batch):
            loss, aux = loss_fn(*batch)
            grads = torch.autograd.grad(loss, [v.value for v in variables])
            with torch.no_grad():
                optimizer.apply(grads, variables)
            return loss.detach(), aux.detach()

    else:
        import jax

        def pure(values, *batch):
            with keras.StatelessScope(state_mapping=list(zip(variables, values))):
                return loss_fn(*batch)

        def step(*batch):
            values = [v.value for v in variables]
            (loss, aux), grads = jax.value_and_grad(pure, has_aux=True)(values, *batch)
            optimizer.apply(grads, variables)
            return loss, aux

    return step


def main(steps=150, seed=0):
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(512, 16)).astype("float32")
    y = (x[:, :4].sum(axis=1) > 0).astype("int32")

    teacher = keras.Sequential(
        [keras.Input((16,)), keras.layers.Dense(32, activation="tanh"), keras.layers.Dense(24)]
    )
    inputs = keras.Input((16,))
    hidden = keras.layers.Dense(16, activation="relu")(inputs)
    student = keras.Model(inputs, {"hidden": hidden, "logits": keras.layers.Dense(2)(hidden)})

    head = VIDHead(name="vid")  # a Dense 16 → 24 mean and one α per teacher channel
    head.build((None, 16), (None, 24))
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def loss_fn(x_batch, y_batch, t_batch):
        outputs = student(x_batch, training=True)
        vid = ops.mean(head(outputs["hidden"], t_batch))  # per-example NLL → batch mean
        return ce(y_batch, outputs["logits"]) + 1.0 * vid, vid

    variables = student.trainable_variables + head.trainable_variables
    optimizer = keras.optimizers.Adam(1e-2)
    optimizer.build(variables)
    step = make_step(loss_fn, variables, optimizer)
    for i in range(steps):
        index = rng.choice(len(x), 64, replace=False)
        t_batch = teacher(x[index], training=False)  # the teacher stays outside the gradient
        loss, vid = step(x[index], y[index], t_batch)
        if i % 50 == 0 or i == steps - 1:
            print(f"step {i:3d}  loss {float(loss):.4f}  vid {float(vid):.4f}")
    variance = ops.convert_to_numpy(head.variance)
    print(
        f"learned σ² per teacher channel: min {variance.min():.3f}, "
        f"median {np.median(variance):.3f}, max {variance.max():.3f}"
    )


if __name__ == "__main__":
    main()
