"""CNN → MLP transfer, the paper's second experiment, at CPU scale.

A convolutional teacher is distilled into a multi-layer perceptron: VID
regresses the teacher's feature maps from the MLP's hidden vectors (a Dense
layer and a reshape per pair, `VIDHead`'s vector → map case), so the MLP
learns to carry what the convolutional stages compute. Compared, on the
same recipe: the MLP alone, KD, FitNet (the same regressors with σ = 1) and
VID (`vid-i`), plus KD + VID.

    KERAS_BACKEND=tensorflow python examples/cnn_to_mlp.py

Defaults: Fashion-MNIST from `../shared/data/`, the cached teacher of the
Fashion-MNIST table (`cnn-16,32,64`), an MLP with two hidden layers of 256
units (`hidden1` → teacher `block2` (14×14×32), `hidden2` → `block3`
(7×7×64)). Writes `results/cnn_to_mlp/` (results.json, results.md,
accuracy.png).
"""

import argparse
import json
import time

import keras

from keras_vid import VIDDistiller
from keras_vid.experiments import MethodConfig, parse_architecture
from keras_vid.experiments.data import subsample_per_class
from keras_vid.experiments.report import write_outputs
from keras_vid.experiments.runner import (
    DataConfig,
    evaluate_accuracy,
    get_teacher,
    load_dataset,
    train,
)
from keras_vid.experiments.training import TrainingConfig

METHODS = ("student", "kd", "fitnet", "vid-i")


def build(method, teacher, student, pairs, config):
    """The model to fit and its compile arguments, for one method."""
    if method == "student":
        return student, {}
    kd = {"kd_weight": config.kd_weight, "temperature": config.temperature}
    if method == "kd":
        # VIDDistiller needs a pair: a logits → logits head weighted by 0.
        return VIDDistiller(teacher, student, pairs=[("logits", "logits")]), {
            "vid_weight": 0.0,
            **kd,
        }
    learn = method != "fitnet"
    options = config.head_options(
        init_variance=config.init_variance if learn else 1.0, learn_variance=learn
    )
    distiller = VIDDistiller(teacher, student, pairs=pairs, head_options=options)
    extra = kd if method == "kd+vid-i" else {"kd_weight": 0.0}
    return distiller, {"vid_weight": config.vid_weight, **extra}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default="../shared/data/fashion_mnist_{split}.npz")
    p.add_argument("--teacher", default="cnn-16,32,64")
    p.add_argument("--teacher-epochs", type=int, default=3)
    p.add_argument("--hidden", default="256,256", help="MLP hidden widths.")
    p.add_argument("--pairs", default="hidden1:block2,hidden2:block3")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--per-class", default="100,1000")
    p.add_argument("--seeds", default="0")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--min-steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument(
        "--lr",
        type=float,
        default=0.01,
        help="student learning rate; an MLP without BatchNorm diverges under KD at 0.1.",
    )
    p.add_argument("--vid-weight", type=float, default=1.0)
    p.add_argument("--output-dir", default="results/cnn_to_mlp")
    p.add_argument("--cache-dir", default="results/fashion_mnist/teacher")
    args = p.parse_args()

    # The teacher is cached under the same key as the Fashion-MNIST table's.
    training = TrainingConfig(
        batch_size=args.batch_size,
        epochs=args.epochs,
        min_steps=args.min_steps,
        learning_rate=args.lr,
    )
    teacher_training = TrainingConfig(batch_size=args.batch_size, epochs=args.teacher_epochs)
    data_config = DataConfig(source=args.dataset)
    data = load_dataset(data_config)
    teacher, teacher_info = get_teacher(
        args.teacher, data_config, teacher_training, data, args.cache_dir
    )
    pairs = [tuple(pair.split(":")) for pair in args.pairs.split(",")]
    student_arch = parse_architecture(f"mlp-{args.hidden}")
    config = MethodConfig(vid_weight=args.vid_weight)
    methods = args.methods.split(",")

    runs, start = [], time.time()
    for per_class in [int(v) for v in args.per_class.split(",")]:
        for seed in [int(v) for v in args.seeds.split(",")]:
            for method in methods:
                keras.utils.set_random_seed(1000 + seed)
                student = student_arch.build(data.num_classes, data.input_shape, "student")
                model, compile_kwargs = build(method, teacher, student, pairs, config)
                indices = subsample_per_class(data.train_labels, per_class, seed)
                t0 = time.time()
                epochs, steps, _ = train(model, compile_kwargs, data, indices, training, seed)
                record = {
                    "method": method,
                    "per_class": per_class,
                    "seed": seed,
                    "train_images": int(len(indices)),
                    "epochs": epochs,
                    "steps": steps,
                    "test_accuracy": evaluate_accuracy(student, data),
                    "train_time_s": round(time.time() - t0, 1),
                }
                runs.append(record)
                print(
                    f"{method:9s} per_class={per_class:5d} seed={seed}: "
                    f"{record['test_accuracy']:.2f} % ({record['train_time_s']:.0f} s)",
                    flush=True,
                )
                payload = {
                    "config": {
                        "backend": keras.backend.backend(),
                        "args": vars(args),
                        "pairs": pairs,
                        "training": training.__dict__,
                    },
                    "teacher": {k: v for k, v in teacher_info.items() if k != "cache_path"},
                    "runs": runs,
                    "elapsed_s": round(time.time() - start, 1),
                }
                table = write_outputs(
                    args.output_dir,
                    payload,
                    methods,
                    f"CNN → MLP ({args.teacher} → mlp-{args.hidden}), Fashion-MNIST",
                )
    print(table)
    print(json.dumps({"elapsed_s": round(time.time() - start, 1)}))


if __name__ == "__main__":
    main()
