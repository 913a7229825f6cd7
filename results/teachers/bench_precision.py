"""Training throughput of an airbench network per precision and compiler.

`python results/teachers/bench_precision.py --widths 128,512,512 --residual`
builds the model four times (float32 / `mixed_bfloat16`, XLA off / on),
times one `train_on_batch` of each in turn (interleaved rounds, so a change
in the machine's load hits every setting alike) and prints the median of
the timed rounds after the warm-up ones: images/s, realised GFLOP/s (a
training step counted as 3 × the convolutions' forward FLOPs) and the
seconds an epoch of 50 000 images takes.
"""

import argparse
import itertools
import time

import keras
import numpy as np

from keras_vid.experiments.models.airbench import airbench


def forward_macs(model):
    """Multiply-adds of the model's convolutions for one image."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            _, h, w, c = layer.output.shape
            total += h * w * c * int(np.prod(layer.kernel.shape[:3]))
    return total


def build(widths, residual, policy, xla):
    keras.config.set_dtype_policy(policy)
    try:
        model = airbench(widths, residual=residual)
    finally:
        keras.config.set_dtype_policy("float32")
    model.compile(
        optimizer=keras.optimizers.SGD(0.01, momentum=0.85, nesterov=True),
        loss=keras.losses.CategoricalCrossentropy(from_logits=True),
        jit_compile=xla,
    )
    return model


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--widths", default="64,256,256")
    p.add_argument("--residual", action="store_true")
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--rounds", type=int, default=4)
    args = p.parse_args(argv)
    widths = tuple(int(w) for w in args.widths.split(","))
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (args.batch_size, 32, 32, 3)).astype("float32")
    y = keras.utils.to_categorical(np.arange(args.batch_size) % 10, 10)
    settings = list(itertools.product(("mixed_bfloat16", "float32"), (False, True)))
    models = {s: build(widths, args.residual, *s) for s in settings}
    flops = 6 * forward_macs(next(iter(models.values()))) * args.batch_size
    times = {s: [] for s in settings}
    for round_ in range(args.warmup + args.rounds):
        for s, model in models.items():
            start = time.perf_counter()
            model.train_on_batch(x, y)
            if round_ >= args.warmup:
                times[s].append(time.perf_counter() - start)
    print(
        f"airbench {widths} residual={args.residual}, batch {args.batch_size}, "
        f"{forward_macs(models[settings[0]]) / 1e6:.0f} M MACs per image forward"
    )
    print("| precision | XLA | images/s | realised GFLOP/s | epoch of 50 000 |")
    print("|---|---|---|---|---|")
    for (policy, xla), seconds in times.items():
        step = float(np.median(seconds))
        rate = args.batch_size / step
        print(
            f"| `{policy}` | {'on' if xla else 'off'} | {rate:.0f} | "
            f"{flops / step / 1e9:.0f} | {50_000 / rate:.0f} s |"
        )


if __name__ == "__main__":
    main()
