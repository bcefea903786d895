#!/usr/bin/env bash
# A reduced Table 6 (paper 4.3) on the CPU, issue 19: HBA (conv strategy) vs STN (its own method: every layer a
# hyper-layer, learned perturbation scale with entropy bonus) vs random search (same wall-clock budget as one HBA
# run: 4 trials of 4 epochs + the best retrained for the full epochs) vs STN's fixed initial hyperparameters, each on
# configs/stn-alexnet-cifar10-reduced.yaml: alexnet-stn-small (1/4 of STN's filters, fc 512), real CIFAR-10 with
# 4,000 train / 1,000 val / 2,000 test images (data.split_seed 0), STN's optimiser settings but lr 0.05 (the
# config says why), $EPOCHS epochs (20),
# one thread per process (OMP_NUM_THREADS=1), nice 15. Every step resumes where it stopped when run again (a finished
# run is read back). EXTRA="section.key=value ..." adds overrides to every step (a variant: give it its own OUT).
#
#   bash docs/results/stn-table6-cpu.sh hba S         # HBA search, train.seed S (0, 1, 2)
#   bash docs/results/stn-table6-cpu.sh stn S         # STN's method, same model, data and budget
#   bash docs/results/stn-table6-cpu.sh fixed S       # plain training at STN's initial values
#   bash docs/results/stn-table6-cpu.sh random S      # random search: 4 trials x 4 epochs, best retrained
#   bash docs/results/stn-table6-cpu.sh all           # every step, seeds 0 1 2, one at a time (diagnostics last)
#   bash docs/results/stn-table6-cpu.sh hba-frozen S  # diagnostic: HBA with optim.hyper_lr=0 (lambda stays at init)
#   bash docs/results/stn-table6-cpu.sh hba-values S  # diagnostic: a plain net trained at HBA seed S's final values
#   bash docs/results/stn-table6-cpu.sh table         # docs/results/stn-table6-cpu-table.md, .json + trajectory figures
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${DATA:-/work/data/cifar10}
OUT=${OUT:-runs/stn-table6-cpu}
EPOCHS=${EPOCHS:-20}
export OMP_NUM_THREADS=1 PYTHONPATH=$PWD  # python: the one with torch (e.g. . /work/venv/bin/activate)
HBA=(nice -n 15 python -m hba_fast.cli)
CFG=configs/stn-alexnet-cifar10-reduced.yaml
COMMON=(--set "data.path=$DATA" --set "train.epochs=$EPOCHS" --set train.device=cpu --set run.progress=false)
for extra in ${EXTRA:-}; do COMMON+=(--set "$extra"); done  # e.g. EXTRA="optim.hyper_lr=0.03" OUT=runs/other
step=${1:?usage: stn-table6-cpu.sh hba|stn|fixed|random SEED, or table}
seed=${2:-0}
case "$step" in
  hba)    "${HBA[@]}" search $CFG "${COMMON[@]}" --set train.seed="$seed" --set run.out_dir="$OUT/hba/seed$seed" ;;
  stn)    "${HBA[@]}" search $CFG "${COMMON[@]}" --set train.seed="$seed" --set train.method=stn \
            --set model.strategy=all --set run.out_dir="$OUT/stn/seed$seed" ;;
  fixed)  "${HBA[@]}" tune $CFG --fixed "${COMMON[@]}" --set train.seed="$seed" --set run.out_dir="$OUT/fixed/seed$seed" ;;
  random) "${HBA[@]}" tune $CFG --random 4 --trial-epochs 4 "${COMMON[@]}" --set train.seed="$seed" \
            --set run.out_dir="$OUT/random/seed$seed" ;;
  # diagnostics of HBA vs the fixed initial values (docs/results/stn-table6-cpu.md says why they are here)
  hba-frozen) "${HBA[@]}" search $CFG "${COMMON[@]}" --set train.seed="$seed" --set optim.hyper_lr=0 \
            --set run.out_dir="$OUT/hba-frozen/seed$seed" ;;   # lambda never moves: the hypernetwork's own effect
  hba-values) "${HBA[@]}" tune $CFG --values "$OUT/hba/seed$seed/schedule.json" "${COMMON[@]}" \
            --set train.seed="$seed" --set run.out_dir="$OUT/hba-values/seed$seed" ;;  # a plain net at HBA's values
  all)    for s in 0 1 2; do for m in hba stn fixed random; do bash "$0" "$m" "$s"; done; done
          for s in 0 1 2; do for m in hba-values hba-frozen; do bash "$0" "$m" "$s"; done; done ;;
  table)  python bench/stn_table6.py "$OUT" --md docs/results/stn-table6-cpu-table.md --json docs/results/stn-table6-cpu.json \
            --figures docs/results ;;
  *) echo "unknown step $step" >&2; exit 2 ;;
esac
