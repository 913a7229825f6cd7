"""The CIFAR-10 experiment of `results/cifar10/README.md` as shell commands.

    python results/cifar10/jobs.py validation > jobs.txt   # or: ablation, test
    xargs -P 2 -d '\\n' -I{} bash -c {} < jobs.txt

Each command is `python -m keras_vid.experiments` on one setting and one
seed, writing its own directory under `runs/` (merge them afterwards with
`python -m keras_vid.experiments.compare --merge-into ...`). TensorFlow runs
on one thread per process, so two processes use the 2-core machine.
"""

import sys

TEACHER = "results/cifar10/teacher/teacher.keras"
COMMON = (
    "TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1 KERAS_BACKEND=tensorflow "
    "python -m keras_vid.experiments --dataset ../shared/data/cifar10_{split}.npz "
    f"--teacher cnn-32,64,128,256 --teacher-model {TEACHER} --student cnn-8,16,32,64 "
    "--per-class 100 --validation-per-class 500 --stages 2,3,4"
)
# The TensorFlow reproduction's settings: σ² ≥ 1 (α₀ = 5, so σ² = 6), BN after
# every layer of μ, cross-entropy weighted 0.1, gradients clipped to norm 100.
RECIPE = (
    "--min-variance 1 --init-variance 6 --head-batch-norm all --task-weight 0.1 --clipnorm 100"
)
REFS = "--min-variance 0 --init-variance 5 --alpha-gradient-scale 1"  # the PyTorch references
FAST_SIGMA = "--alpha-gradient-scale channels"  # keras_vid's default since this experiment

# (label, method, flags, epochs, seeds): 200 epochs of 8 steps = 1 600 steps.
VALIDATION = [
    ("student", "student", "", 200, (0, 1)),
    ("reproduction recipe", "vid-i", RECIPE + " --alpha-gradient-scale 1", 200, (0, 1)),
    ("student", "student", "", 100, (0,)),
    ("PyTorch references", "vid-i", REFS, 100, (0,)),
    ("recipe, floor 1e-5", "vid-i", RECIPE.replace("1 --init-variance 6", "0 --init-variance 5")
     + " --alpha-gradient-scale 1", 100, (0,)),
    ("recipe, floor 0.01", "vid-i", RECIPE.replace("1 --init-variance 6", "0.01 --init-variance 5")
     + " --alpha-gradient-scale 1", 100, (0,)),
    ("recipe, floor 0.01, task weight 1", "vid-i",
     RECIPE.replace("1 --init-variance 6", "0.01 --init-variance 5").replace("0.1 ", "1 ")
     + " --alpha-gradient-scale 1", 100, (0,)),
    ("PyTorch references, α gradient × C", "vid-i", "--min-variance 0 " + FAST_SIGMA, 100, (0,)),
    ("PyTorch references, α gradient × C, floor 0.001", "vid-i",
     "--min-variance 0.001 " + FAST_SIGMA, 100, (0,)),
]  # fmt: skip
# The final grid, scored once on the test split with the settings validation chose.
TEST = [
    ("student", REFS),
    ("fitnet", REFS),
    ("vid-i", "--min-variance 0.001 " + FAST_SIGMA),
    ("vid-i (PyTorch references)", REFS),
    ("kd", ""),  # T = 4, weight 1 (the CLI's defaults)
    ("at", ""),  # β = 1000 per pair (Zagoruyko & Komodakis)
    # Second round, chosen on validation (ROUND2): λ = 10 for VID-I.
    ("vid-i (weight 10)", "--min-variance 0.001 " + FAST_SIGMA + " --vid-weight 10"),
    ("fitnet (weight 100)", REFS + " --fitnet-weight 100"),
    # Third round: the best VID-I on validation (λ = 10, σ² ≥ 0.01).
    ("vid-i (weight 10, floor 0.01)", FAST_SIGMA + " --min-variance 0.01 --vid-weight 10"),
]
# The ablation around the chosen VID-I setting (validation split, 1 600 steps
# unless the label says otherwise, 2 seeds): one ingredient changed per row.
CHOSEN = "--min-variance 0.001 " + FAST_SIGMA
ABLATION = [
    ("chosen", "vid-i", CHOSEN, 200),
    ("kd", "kd", "", 200),
    ("kd + chosen vid-i", "kd+vid-i", CHOSEN, 200),
    ("BN after the hidden layers of mu", "vid-i", CHOSEN + " --head-batch-norm hidden", 200),
    ("extra pair at the first conv", "vid-i", CHOSEN + " --stages 1,2,3,4", 200),
    ("mu width 2C", "vid-i", CHOSEN + " --hidden-width 2x", 200),
    ("VID weight 10", "vid-i", CHOSEN + " --vid-weight 10", 200),
    ("BN after every layer of mu", "vid-i", CHOSEN + " --head-batch-norm all", 200),
    ("chosen, 800 steps", "vid-i", CHOSEN, 100),
    ("student, 800 steps", "student", "", 100),
]

# Second round (validation, 1 600 steps): the VID weight with σ² learning, the
# three candidates of the first round combined, and a 4× wider student (does
# the student's capacity limit what feature terms can carry?).
COMBINED = CHOSEN + " --head-batch-norm hidden --stages 1,2,3,4 --hidden-width 2x"
WIDER = "--student cnn-16,32,64,128"
ROUND2 = [
    ("VID weight 10", "vid-i", CHOSEN + " --vid-weight 10", 200, (0,)),
    ("VID weight 3", "vid-i", CHOSEN + " --vid-weight 3", 200, (0,)),
    ("combined: BN hidden, first-conv pair, width 2C", "vid-i", COMBINED, 200, (0, 1)),
    ("VID weight 10", "vid-i", CHOSEN + " --vid-weight 10", 200, (1,)),
    ("VID weight 30", "vid-i", CHOSEN + " --vid-weight 30", 200, (0,)),
    ("FitNet weight 10", "fitnet", REFS + " --fitnet-weight 10", 200, (0,)),
    ("FitNet weight 100", "fitnet", REFS + " --fitnet-weight 100", 200, (0,)),
    ("VID weight 3", "vid-i", CHOSEN + " --vid-weight 3", 200, (1,)),
    # Third round: FitNet's weight to its peak, and a variance floor at the
    # scale of the teacher features' variance (0.01-0.13) for VID.
    ("FitNet weight 100", "fitnet", REFS + " --fitnet-weight 100", 200, (1,)),
    ("FitNet weight 1000", "fitnet", REFS + " --fitnet-weight 1000", 200, (0,)),
    ("FitNet weight 30", "fitnet", REFS + " --fitnet-weight 30", 200, (0,)),
    (
        "VID weight 10, floor 0.01",
        "vid-i",
        FAST_SIGMA + " --min-variance 0.01 --vid-weight 10",
        200,
        (0,),
    ),
    (
        "VID weight 3, floor 0.01",
        "vid-i",
        FAST_SIGMA + " --min-variance 0.01 --vid-weight 3",
        200,
        (0,),
    ),
    ("VID weight 1, floor 0.01", "vid-i", FAST_SIGMA + " --min-variance 0.01", 200, (0,)),
    ("wider student cnn-16,32,64,128", "student", WIDER, 200, (0,)),
    ("wider student, chosen VID-I", "vid-i", WIDER + " " + CHOSEN, 200, (0,)),
]

# Fourth round (validation, 1 600 steps): the pairs read each stage's feature
# before its last ReLU (`--feature-point pre-activation`; a WRN's group outputs
# already are). The post-ReLU maps above are 59-85 % exact zeros in stages 2-4
# of the teacher, which no Gaussian q(t|s) fits; the paper's WRN pairs the
# residual stream, a pre-activation feature. FitNet's weight is retuned
# because its loss scales with the features' variance (about 10× larger
# here); VID's learned σ² makes it scale-free.
PRE = " --feature-point pre-activation"
VID10 = FAST_SIGMA + " --min-variance 0.01 --vid-weight 10"
ROUND4 = [
    ("pre-activation, VID weight 10, floor 0.01", "vid-i", VID10 + PRE, 200, (0,)),
    ("pre-activation, FitNet weight 100", "fitnet", REFS + " --fitnet-weight 100" + PRE, 200,
     (0,)),
    ("pre-activation, VID weight 10, floor 0.01", "vid-i", VID10 + PRE, 200, (1,)),
    ("pre-activation, FitNet weight 10", "fitnet", REFS + " --fitnet-weight 10" + PRE, 200, (0,)),
    ("pre-activation, FitNet weight 30", "fitnet", REFS + " --fitnet-weight 30" + PRE, 200, (0,)),
    ("pre-activation, VID weight 10, floor 0.1", "vid-i",
     VID10.replace("0.01", "0.1") + PRE, 200, (0,)),
    ("pre-activation, VID weight 3, floor 0.01", "vid-i",
     VID10.replace("weight 10", "weight 3") + PRE, 200, (0,)),
    # Second seeds of the best of each method on seed 0.
    ("pre-activation, VID weight 10, floor 0.1", "vid-i",
     VID10.replace("0.01", "0.1") + PRE, 200, (1,)),
    ("pre-activation, FitNet weight 30", "fitnet", REFS + " --fitnet-weight 30" + PRE, 200, (1,)),
]  # fmt: skip

# Fifth round (validation, 1 600 steps, 2 seeds a row): the ablation around
# the final VID-I (λ 10, σ² ≥ 0.01, post-ReLU pairs), one ingredient per row;
# first the second seed of the setting itself, which round 3 ran once.
FINAL = VID10
ROUND5 = [
    ("VID weight 10, floor 0.01", "vid-i", FINAL, 200, (1,)),
    ("final, floor 0", "vid-i", FINAL.replace("0.01", "0"), 200, (0, 1)),
    ("final, floor 1", "vid-i", FINAL.replace("0.01", "1"), 200, (0, 1)),
    ("VID weight 3, floor 0.01", "vid-i", FINAL.replace("weight 10", "weight 3"), 200, (1,)),
    ("VID weight 1, floor 0.01", "vid-i", FINAL.replace("weight 10", "weight 1"), 200, (1,)),
    ("final, 800 steps", "vid-i", FINAL, 100, (0, 1)),
    ("kd", "kd", "", 200, (1,)),
    ("kd + final vid-i", "kd+vid-i", FINAL, 200, (0, 1)),
    ("final, BN after the hidden layers of mu", "vid-i", FINAL + " --head-batch-norm hidden",
     200, (0, 1)),
    ("final, BN after every layer of mu", "vid-i", FINAL + " --head-batch-norm all", 200, (0, 1)),
    ("final, mu width 2C", "vid-i", FINAL + " --hidden-width 2x", 200, (0, 1)),
    ("final, extra pair at the first conv", "vid-i", FINAL + " --stages 1,2,3,4",
     200, (0, 1)),
]  # fmt: skip


def slug(label):
    return "-".join("".join(c if c.isalnum() else " " for c in label.lower()).split())


def validation_runs(rows, directory):
    """One command per (row, seed) of `rows` = (label, method, flags, epochs,
    seeds), scored on the validation split, written under `runs/<directory>`
    (a callable of the epochs, or a name)."""
    for label, method, flags, epochs, seeds in rows:
        folder = directory(epochs) if callable(directory) else directory
        for seed in seeds:
            out = f"runs/{folder}/{slug(label)}/s{seed}"
            yield (
                f"mkdir -p {out} && {COMMON} --score-on validation --methods {method} "
                f"--epochs {epochs} --seeds {seed} {flags} --output-dir {out} > {out}.log 2>&1"
            )


def validation():
    return validation_runs(VALIDATION, lambda epochs: f"val{epochs * 8}")


def ablation(seeds=(0, 1)):
    return validation_runs([row + (seeds,) for row in ABLATION], "ablation")


def round2():
    return validation_runs(ROUND2, "ablation")


def round4():
    return validation_runs(ROUND4, "ablation")


def round5():
    return validation_runs(ROUND5, "ablation")


# Fourth round on the test split: each method's best on validation with the
# pairs read before the stages' last ReLU (VID-I: λ 10, σ² ≥ 0.1; FitNet λ 30).
TEST4 = [
    ("vid-i (pre-activation, weight 10, floor 0.1)", VID10.replace("0.01", "0.1") + PRE),
    ("fitnet (pre-activation, weight 30)", REFS + " --fitnet-weight 30" + PRE),
]


def test(seeds=(0, 1, 2), rows=TEST):
    for label, flags in rows:
        method = label.split()[0]
        for seed in seeds:
            out = f"runs/test/{slug(label)}/s{seed}"
            yield (
                f"mkdir -p {out} && {COMMON} --score-on test --methods {method} --epochs 200 "
                f"--seeds {seed} --clipnorm 100 {flags} --output-dir {out} > {out}.log 2>&1"
            )


if __name__ == "__main__":
    sets = {
        "validation": validation,
        "ablation": ablation,
        "round2": round2,
        "round4": round4,
        "round5": round5,
        "test4": lambda: test(rows=TEST4),
        "test": test,
    }
    for line in sets[sys.argv[1]]():
        print(line)
