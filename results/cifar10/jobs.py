"""The CIFAR-10 experiment as a list of commands, one per line, for `xargs -P 2`.

    python results/cifar10/jobs.py validation > jobs.txt
    xargs -P 2 -I{} -d '\\n' bash -c {} < jobs.txt

Every command is `python -m keras_vid.experiments` on one seed and one
setting, writing its own output directory under `runs/` (merged afterwards
with `python -m keras_vid.experiments.compare`). Each process runs
TensorFlow on one thread, so two of them use the 2-core machine fully.
"""

import sys

TEACHER = "results/cifar10/teacher/teacher.keras"
COMMON = (
    "TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1 KERAS_BACKEND=tensorflow "
    "python -m keras_vid.experiments --dataset ../shared/data/cifar10_{split}.npz "
    f"--teacher cnn-32,64,128,256 --teacher-model {TEACHER} --student cnn-8,16,32,64 "
    "--per-class 100 --epochs 200 --validation-per-class 500 --stages 2,3,4"
)
# The settings of the TensorFlow reproduction that matched the paper (see
# results/cifar10/README.md): σ² ≥ 1 (α₀ = 5: σ² = 6), BN after every layer
# of μ, CE weighted 0.1 against Σ VID, every gradient clipped to norm 100.
RECIPE = "--min-variance 1 --init-variance 6 --head-batch-norm all --task-weight 0.1 --clipnorm 100"
HEAD_FLAGS = RECIPE.replace(" --clipnorm 100", "")
# Settings of the ablation: (label, methods, flags); one variable at a time
# away from RECIPE, plus the PyTorch references' settings.
ABLATION = [
    ("student", "student", ""),
    ("recipe", "vid-i", RECIPE),
    ("fitnet", "fitnet", RECIPE),
    ("PyTorch refs (no floor, no BN, weight 1, no clip)", "vid-i", "--min-variance 0 --init-variance 5"),
    ("floor 1e-5 (PyTorch refs)", "vid-i", RECIPE.replace("--min-variance 1 --init-variance 6", "--min-variance 0 --init-variance 5")),
    ("task weight 1", "vid-i", RECIPE.replace("--task-weight 0.1", "--task-weight 1")),
    ("no BN in mu", "vid-i", RECIPE.replace("--head-batch-norm all", "--head-batch-norm none")),
    ("fitnet (no BN, weight 1)", "fitnet", ""),
    ("floor 0.1", "vid-i", RECIPE.replace("--min-variance 1 --init-variance 6", "--min-variance 0.1 --init-variance 5.1")),
    ("floor 0.01", "vid-i", RECIPE.replace("--min-variance 1 --init-variance 6", "--min-variance 0.01 --init-variance 5")),
    ("floor 0.001", "vid-i", RECIPE.replace("--min-variance 1 --init-variance 6", "--min-variance 0.001 --init-variance 5")),
    ("mu width 2C", "vid-i", RECIPE + " --hidden-width 2x"),
    ("+ pair at first conv", "vid-i", RECIPE + " --stages 1,2,3,4"),
    ("half schedule (800 steps)", "vid-i", RECIPE + " --epochs 100"),
]


def slug(label):
    return "".join(c if c.isalnum() else "_" for c in label).strip("_")


def validation(seeds=(0, 1), rows=None):
    for label, methods, flags in ABLATION:
        if rows is not None and label not in rows:
            continue
        for seed in seeds:
            out = f"runs/val/{slug(label)}/s{seed}"
            yield (
                f"mkdir -p {out} && {COMMON} --score-on validation --methods {methods} --seeds {seed} {flags} "
                f"--output-dir {out} > {out}.log 2>&1"
            )


def test(methods=("student", "kd", "fitnet", "at", "vid-i"), seeds=(0, 1, 2), flags=""):
    """The final grid on the test split: one command per method and seed."""
    for method in methods:
        for seed in seeds:
            out = f"runs/test/{method}/s{seed}"
            yield (
                f"mkdir -p {out} && {COMMON} --score-on test --methods {method} --seeds {seed} "
                f"--clipnorm 100 {flags} --output-dir {out} > {out}.log 2>&1"
            )


if __name__ == "__main__":
    for line in {"validation": validation, "test": test}[sys.argv[1]]():
        print(line)
