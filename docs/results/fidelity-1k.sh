#!/usr/bin/env bash
# The CPU fidelity study of docs/results/fidelity-1k.md (issue 18): where augmentation pays.
# Real CIFAR-10 rebuilt from ../shared/data (about 90% of its images are JPEG-75 copies, so absolute errors are not
# the published ones), 1,000 training images (data.split_seed 0), 5,000 validation images for the search (the
# evaluation runs train on the same 1,000), wrn-10-2, 100 epochs for the search and every arm, one thread per process
# (OMP_NUM_THREADS=1), nice 10, at most two processes at a time on a 2-core machine. Every step resumes where it
# stopped when run again; a step whose inputs are not there yet (a schedule arm before its search) waits for them.
#
#   bash docs/results/fidelity-1k.sh data                 # rebuild CIFAR-10 into $DATA (about 10 s)
#   bash docs/results/fidelity-1k.sh search S             # the default HBA search with train.seed S (0, 1, 2)
#   bash docs/results/fidelity-1k.sh arm ARM K            # one (arm, seed K) pair of the comparison: ARM is
#                                                         #   baseline | cutout | autoaugment | randaugment |
#                                                         #   trivialaugment | pba | search-sS | prior | final | shuffled
#                                                         #   | a variant's name (its search, then its schedule)
#   bash docs/results/fidelity-1k.sh controls             # the three controls from search-s0's schedule
#   bash docs/results/fidelity-1k.sh variant NAME         # a search variant (section 2 of the doc; table VARIANTS)
#   bash docs/results/fidelity-1k.sh regime2 ARM          # the second regime, one seed: search | baseline | cutout |
#                                                         #   autoaugment | schedule
#   bash docs/results/fidelity-1k.sh queue FILE           # run the steps listed in FILE (one per line), two at a time
#   bash docs/results/fidelity-1k.sh table                # every finished pair read back: compare.md / .json / .png,
#                                                         #   the clean training errors, the schedules' plots
# Time (2-core machine, two processes at a time, one thread each): a search about 15-20 min, a pair about 8 min.
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${DATA:-/work/data/cifar10}
OUT=${OUT:-/work/runs-18}
export OMP_NUM_THREADS=1 PYTHONPATH=$PWD
HBA=(nice -n 10 python -m hba_fast.cli)
COMMON=(--set "data.path=$DATA" --set data.num_train=1000 --set data.num_val=5000 --set data.split_seed=0
        --set model.name=wrn-10-2 --set "train.epochs=${EPOCHS:-100}" --set train.device=cpu --set run.progress=false)
SEARCH=(configs/cifar10-reduced.yaml "${COMMON[@]}" --set train.eval_every=0)
EVAL=(configs/eval-cifar10.yaml "${COMMON[@]}" --set "run.out_dir=$OUT/compare" --seeds 3)
PBA_FILE=${PBA_FILE:-$PWD/../shared/data/pba/rcifar10_16_wrn.txt}
# Section 2: search variants, each one change to the default search (name -> its --set overrides).
# The search's train.seed is 0 in every variant (search-s0 is the default's run with the same seed).
declare -A VARIANTS=(
  [init-weak]="policy.init=weak"                      # enhance ops start near their identity (0.955), not 0.19
  [init-mag-0.3]="policy.init_magnitude=0.3"          # every magnitude starts at 30% of its range (default 5%)
  [init-prob-0.2]="policy.init_prob=0.2"              # every probability starts at 0.2 (default 0.05)
  [hyper-lr-0.01]="optim.hyper_lr=0.01"               # lambda's Adam 3x slower (default 0.03)
  [hyper-lr-0.1]="optim.hyper_lr=0.1"
  [hyper-lr-0.25]="optim.hyper_lr=0.25"               # lambda's travel of the paper's 3,100 hyper steps in our 400
  [sigma-0.5]="policy.sigma=0.5"                      # smaller per-sample perturbation (default 1.0)
  [sigma-2]="policy.sigma=2.0"
  [wd-0.0005]="optim.weight_decay=0.0005"             # evaluation's weight decay (Table 8's search: 0.005)
  [warmup-5]="train.hyper_warmup_epochs=5"            # default 1
  [strategy-bn]="model.strategy=bn"                   # every BN a hyper-layer (default first_bn)
  [strategy-conv-bn]="model.strategy=conv+bn"
  [hyper-bn-batch]="train.hyper_bn=batch"             # default running
  [t-val-2]="train.t_val=2"                           # t_train:t_val 2:2 (default 2:1)
  [bias-u-1]="model.hyper_bn_bias_u=1.0"              # default 0
  [v-std-0.1]="model.hyper_bn_v_std=0.1"              # default 0.01
  [val-1000]="data.num_val=1000"                      # a smaller validation set (also moves the 1,000 training images)
  [epochs-200]="train.epochs=200"                     # a search twice as long (its schedule stretched to 100)
)
# Regime 2 (one seed): 2,000 images, 60 epochs, split seed 1, the same 5,000-image validation set size.
R2=(--set "data.path=$DATA" --set data.num_train=2000 --set data.num_val=5000 --set data.split_seed=1
    --set model.name=wrn-10-2 --set train.epochs=60 --set train.device=cpu --set run.progress=false)

wait_for() { while [ ! -f "$1" ]; do sleep 60; done; }
schedule_of() {  # the schedule.json an arm name stands for
  case "$1" in
    search-s*) echo "$OUT/$1/schedule.json" ;;
    prior|final|shuffled) echo "$OUT/controls/$1/schedule.json" ;;
    *) echo "$OUT/variant-$1/schedule.json" ;;
  esac
}
overrides() { for kv in $1; do printf -- '--set\n%s\n' "$kv"; done; }

case "${1:-}" in
  data)   python ../shared/data/build_cifar10.py "$DATA" ;;
  search) "${HBA[@]}" search "${SEARCH[@]}" --set "train.seed=$2" --set "run.out_dir=$OUT/search-s$2" ;;
  variant) mapfile -t SETS < <(overrides "${VARIANTS[$2]}")
          "${HBA[@]}" search "${SEARCH[@]}" "${SETS[@]}" --set "run.out_dir=$OUT/variant-$2" ;;
  controls) wait_for "$OUT/search-s0/model.pt"
          python bench/schedule_controls.py "$OUT/search-s0/schedule.json" "$OUT/controls" ;;
  arm)    case "$2" in
            baseline|cutout|autoaugment|randaugment|trivialaugment) ARM=$2 ;;
            pba) ARM=pba:$PBA_FILE ;;
            prior|final|shuffled) F=$(schedule_of "$2"); wait_for "$F"; ARM=schedule:$F ;;
            *) F=$(schedule_of "$2"); wait_for "${F%schedule.json}model.pt"; ARM=schedule:$F ;;  # a finished search
          esac
          "${HBA[@]}" compare "${EVAL[@]}" --arms "$ARM" --only-seed "$3" ;;
  regime2) case "$2" in
            search) "${HBA[@]}" search configs/cifar10-reduced.yaml "${R2[@]}" --set train.eval_every=0 \
                      --set "run.out_dir=$OUT/regime2-search" ;;
            schedule) wait_for "$OUT/regime2-search/model.pt"
                      "${HBA[@]}" compare configs/eval-cifar10.yaml "${R2[@]}" --set "run.out_dir=$OUT/regime2" \
                        --seeds 1 --arms "schedule:$OUT/regime2-search/schedule.json" ;;
            *) "${HBA[@]}" compare configs/eval-cifar10.yaml "${R2[@]}" --set "run.out_dir=$OUT/regime2" --seeds 1 \
                 --arms "$2" ;;
          esac ;;
  queue)  grep -v '^\s*\(#\|$\)' "$2" | xargs -P 2 -L 1 bash "$0" ;;
  table)  ARMS="baseline,cutout,autoaugment,randaugment,trivialaugment"
          [ -f "$PBA_FILE" ] && ARMS="$ARMS,pba:$PBA_FILE"
          for a in search-s0 search-s1 search-s2 prior final shuffled "${!VARIANTS[@]}"; do
            F=$(schedule_of "$a"); [ -f "$F" ] && ARMS="$ARMS,schedule:$F"
          done
          python -m hba_fast.cli compare "${EVAL[@]}" --arms "$ARMS"
          python bench/train_test_gap.py "$OUT/compare" --out docs/results/fidelity-1k-gap.json
          cp "$OUT/compare/compare.json" docs/results/fidelity-1k-compare.json ;;
  *) echo "usage: $0 data | search S | arm ARM K | controls | variant NAME | regime2 ARM | queue FILE | table"; exit 2 ;;
esac
