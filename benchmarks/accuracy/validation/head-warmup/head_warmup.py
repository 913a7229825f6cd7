"""The suite with the heads trained first: for the first `--warmup` fraction of
the steps the student gets no VID gradient (μ reads `stop_gradient(s)`), while
the heads learn μ and σ from step 0; afterwards VID trains both as usual.

The idea measured: a random μ at step 0 sends the student gradients that
carry no teacher information; heads fitted first would send only useful ones.

    python benchmarks/accuracy/validation/head-warmup/head_warmup.py --warmup 0.25 \\
        --split validation --tasks digits-10,fmnist-100,fmnist-cnn-to-mlp-100 \\
        --seeds 0,1 --baseline runs/val-base --methods vid,kd+vid \\
        --output runs/val-head-warmup

Every other argument is the suite's (`benchmarks/accuracy.py`).
"""

import argparse
import os
import sys

from keras import ops

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))
import accuracy  # noqa: E402

from keras_vid import VIDHead  # noqa: E402

_state = {}
_mean, _build, _train_run = VIDHead.mean, accuracy.build, accuracy.train_run


def _mean_after_warmup(self, student, training=None):
    step = ops.cast(_state["model"].optimizer.iterations, "float32")
    on = ops.cast(step >= _state["warmup_steps"], student.dtype)
    student = on * student + (1.0 - on) * ops.stop_gradient(student)
    return _mean(self, student, training=training)


def _build_and_remember(*args, **kwargs):
    model, compile_kwargs = _build(*args, **kwargs)
    _state["model"] = model
    return model, compile_kwargs


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--warmup", type=float, required=True, help="fraction of the steps")
    args, rest = p.parse_known_args(argv)

    def train_run(task, data, teacher, method, seed, temperature, settings, split, steps, *a):
        _state["warmup_steps"] = args.warmup * steps
        return _train_run(
            task, data, teacher, method, seed, temperature, settings, split, steps, *a
        )

    VIDHead.mean = _mean_after_warmup
    accuracy.build, accuracy.train_run = _build_and_remember, train_run
    return accuracy.main(rest)


if __name__ == "__main__":
    main()
