#!/usr/bin/env bash
# The validation tables of rounds 4 and 5 (results/cifar10/README.md), from the runs.
set -euo pipefail
cd "$(dirname "$0")"
A=validation/ablation
S=validation/val/student/s0,validation/val/student/s1
python -m keras_vid.experiments.compare --title "CIFAR-10 validation, 1 600 steps, 100 images per class: pairs before the stages' last ReLU (round 4)" \
  --output validation/round4_1600.md \
  "student=$S" \
  "VID-I λ 10, σ² ≥ 0.01, stage outputs=$A/vid-weight-10-floor-0-01/s0,$A/vid-weight-10-floor-0-01/s1" \
  "FitNet λ 100, stage outputs=$A/fitnet-weight-100/s0,$A/fitnet-weight-100/s1" \
  "VID-I λ 10, σ² ≥ 0.01, pre-activation=$A/pre-activation-vid-weight-10-floor-0-01/s0,$A/pre-activation-vid-weight-10-floor-0-01/s1" \
  "VID-I λ 3, σ² ≥ 0.01, pre-activation=$A/pre-activation-vid-weight-3-floor-0-01/s0" \
  "VID-I λ 10, σ² ≥ 0.1, pre-activation=$A/pre-activation-vid-weight-10-floor-0-1/s0,$A/pre-activation-vid-weight-10-floor-0-1/s1" \
  "FitNet λ 10, pre-activation=$A/pre-activation-fitnet-weight-10/s0" \
  "FitNet λ 30, pre-activation=$A/pre-activation-fitnet-weight-30/s0,$A/pre-activation-fitnet-weight-30/s1" \
  "FitNet λ 100, pre-activation=$A/pre-activation-fitnet-weight-100/s0"
seeds() { local d=$1; ls -d "$A/$d"/s? | tr '\n' ',' | sed 's/,$//'; }
python -m keras_vid.experiments.compare --title "CIFAR-10 validation, 1 600 steps unless marked, 100 images per class: the ablation around the final VID-I (round 5)" \
  --output validation/round5_1600.md \
  "student=$S" \
  "final VID-I: λ 10, σ² ≥ 0.01=$(seeds vid-weight-10-floor-0-01)" \
  "σ² ≥ 0 (only σ ≥ 1e-5)=$(seeds final-floor-0)" \
  "σ² ≥ 1 (the TF reproduction's floor)=$(seeds final-floor-1)" \
  "λ 3=$(seeds vid-weight-3-floor-0-01)" \
  "λ 1=$(seeds vid-weight-1-floor-0-01)" \
  "800 steps=$(seeds final-800-steps)" \
  "pairs before the last ReLU, σ² ≥ 0.1=$(seeds pre-activation-vid-weight-10-floor-0-1)" \
  "μ: BN before the hidden ReLUs=$(seeds final-bn-after-the-hidden-layers-of-mu)" \
  "μ: BN after every layer (the TF reproduction's μ)=$(seeds final-bn-after-every-layer-of-mu)" \
  "μ hidden width 2C=$(seeds final-mu-width-2c)" \
  "extra pair at the first convolution=$(seeds final-extra-pair-at-the-first-conv)"
