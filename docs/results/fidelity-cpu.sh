#!/usr/bin/env bash
# The CPU fidelity study of docs/results/fidelity-cpu.md (issue 9, section 5), exactly as it ran.
# Real CIFAR-10 rebuilt from ../shared/data (about 90% of its images are JPEG-75 copies, so absolute errors are not
# the published ones), the reduced split of the paper (4,000 train / 10,000 val, data.split_seed 0), wrn-10-2
# (0.30M parameters: WRN-16-2 would take about twice as long), 15 epochs, one thread per process
# (OMP_NUM_THREADS=1: on a shared 2-core machine two threads lose more to waiting than they gain), nice 10. Every evaluation arm trains on the same 4,000 images the search trained on.
#
#   bash docs/results/fidelity-cpu.sh data       # rebuild CIFAR-10 into $DATA (about 10 s)
#   bash docs/results/fidelity-cpu.sh arm baseline      # one arm x 3 seeds; the four arms and the search
#   bash docs/results/fidelity-cpu.sh arm cutout        #   ran at the same time, one process each
#   bash docs/results/fidelity-cpu.sh arm autoaugment
#   bash docs/results/fidelity-cpu.sh arm randaugment
#   bash docs/results/fidelity-cpu.sh search            # the HBA search
#   bash docs/results/fidelity-cpu.sh schedule 0        # then its schedule, seeds 0, 1, 2 at the same time: each
#   bash docs/results/fidelity-cpu.sh schedule 1        #   is the run `compare` would make for that pair (same
#   bash docs/results/fidelity-cpu.sh schedule 2        #   folder and config), so `table` reads them back
#   bash docs/results/fidelity-cpu.sh search-batch      # the same search with train.hyper_bn=batch (the other choice
#   bash docs/results/fidelity-cpu.sh schedule-batch 0  #   of docs/results/hyper-options-cpu.md), and its schedule
#   bash docs/results/fidelity-cpu.sh schedule-batch 1  #   x 3 seeds: the test error of the schedules each choice
#   bash docs/results/fidelity-cpu.sh schedule-batch 2  #   finds
#   bash docs/results/fidelity-cpu.sh long ARM          # why: baseline, cutout, autoaugment and the schedule again
#   bash docs/results/fidelity-cpu.sh table-long        #   at 45 epochs (one seed each, at the same time)
#   bash docs/results/fidelity-cpu.sh table      # every pair is finished: read back, compare.md / .json / .png
# Each step resumes where it stopped when run again. The search states the hyper-step options it ran with
# (docs/results/hyper-options-cpu.md; they are the defaults now).
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${DATA:-/work/data/cifar10}
OUT=${OUT:-/work/runs-9}
export OMP_NUM_THREADS=1 PYTHONPATH=$PWD
EPOCHS=15
MODEL=wrn-10-2
COMMON=(--set "data.path=$DATA" --set data.num_train=4000 --set data.num_val=10000 --set data.split_seed=0
        --set "model.name=$MODEL" --set "train.epochs=$EPOCHS" --set train.device=cpu --set run.progress=false)
EVAL=(configs/eval-cifar10.yaml "${COMMON[@]}" --set "run.out_dir=$OUT/fidelity" --seeds 3)
ARMS_ALL="baseline,cutout,autoaugment,randaugment,schedule:$OUT/fidelity-search/schedule.json"
ARMS_ALL="$ARMS_ALL,schedule:$OUT/fidelity-search-batch/schedule.json"
SEARCH=(configs/cifar10-reduced.yaml "${COMMON[@]}" --set train.eval_every=5 --set model.hyper_bn_bias_u=1.0
        --set train.hyper_warmup_epochs=1)
case "${1:-}" in
  data)   python ../shared/data/build_cifar10.py "$DATA" ;;
  arm)    nice -n 10 python -m hba_fast.cli compare "${EVAL[@]}" --arms "$2" ;;
  search) nice -n 10 python -m hba_fast.cli search "${SEARCH[@]}" --set train.hyper_bn=running \
            --set "run.out_dir=$OUT/fidelity-search" ;;
  search-batch) nice -n 10 python -m hba_fast.cli search "${SEARCH[@]}" --set train.hyper_bn=batch \
            --set "run.out_dir=$OUT/fidelity-search-batch" ;;
  schedule|schedule-batch) NAME=fidelity-search${1#schedule}
          nice -n 10 python -m hba_fast.cli train configs/eval-cifar10.yaml "${COMMON[@]}" \
            --schedule "$OUT/$NAME/schedule.json" --set "train.seed=$2" \
            --set "run.out_dir=$OUT/fidelity/schedule-$NAME/seed$2" ;;
  table)  python -m hba_fast.cli compare "${EVAL[@]}" --arms "$ARMS_ALL" ;;
  long|table-long) ARMS=${2:-baseline,cutout,autoaugment,schedule:$OUT/fidelity-search/schedule.json}
          nice -n 10 python -m hba_fast.cli compare "${EVAL[@]}" --set train.epochs=45 \
            --set "run.out_dir=$OUT/fidelity-45" --seeds 1 --arms "$ARMS" ;;
  *) echo "usage: $0 data|arm NAME|search|schedule SEED|search-batch|schedule-batch SEED|table|long ARM|table-long"; exit 2 ;;
esac
