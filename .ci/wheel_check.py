"""Run from outside the source tree, in a fresh environment where only the
built wheel and one backend extra are installed: import keras_vid from the
wheel and train a distiller for a few steps, as a user would."""

import pathlib

import keras
import numpy as np

import keras_vid

source = pathlib.Path(keras_vid.__file__).resolve()
assert "site-packages" in source.parts, f"keras_vid was imported from {source}, not the wheel"
print(f"keras_vid {keras_vid.__version__} from {source.parent}, backend {keras.backend.backend()}")


def cnn(prefix, widths):
    inputs = keras.Input((8, 8, 1))
    x = inputs
    for stage, width in enumerate(widths, start=1):
        x = keras.layers.Conv2D(width, 3, padding="same", activation="relu")(x)
        x = keras.layers.MaxPooling2D(name=f"{prefix}_stage{stage}")(x)
    x = keras.layers.GlobalAveragePooling2D(name=f"{prefix}_pool")(x)
    return keras.Model(inputs, keras.layers.Dense(10, name=f"{prefix}_logits")(x))


rng = np.random.default_rng(0)
x = rng.random((64, 8, 8, 1)).astype("float32")
y = rng.integers(0, 10, size=64)
teacher, student = cnn("t", (16, 32)), cnn("s", (4, 8))
distiller = keras_vid.VIDDistiller(teacher, student, pairs="auto")
distiller.compile(
    optimizer="adam",
    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    kd_weight=1.0,
)
before = [np.array(w) for w in student.get_weights()]
history = distiller.fit(x, y, batch_size=16, epochs=2, verbose=0).history
after = student.get_weights()
assert all(np.isfinite(v).all() for v in history["loss"]), history
assert any(not np.allclose(b, a) for b, a in zip(before, after)), "the student did not train"
print(f"trained {len(distiller.pairs)} pairs for 8 steps: loss {history['loss']}")
