#!/usr/bin/env bash
# The GPU version of the fidelity study (docs/results/fidelity-1k.md, issue 18): the paper's Table 4 setting on the
# reduced split. WRN-40-2, CIFAR-10 rebuilt from .data/ (bench/README.md: copy the rebuild inputs there), 4,000
# training / 10,000 validation images (data.split_seed 0), 200 epochs for the search and every arm; every arm trains
# on the same 4,000 images (the regime where augmentation pays), 3 seeds each:
#   baseline, cutout, autoaugment, randaugment, trivialaugment, PBA's published schedule (where the pba: arm exists),
#   the HBA schedule of three searches (train.seed 0, 1, 2), and the controls of search 0 (prior, final, shuffled).
# One command, resumable (run it again after a timeout or on a fresh lent machine with the same OUT: finished runs
# are read back, unfinished ones resume from their checkpoints):
#     OUT=/some/dir bash docs/results/fidelity-gpu.sh           # one GPU
#     OUT=/tmp/x bash docs/results/fidelity-gpu.sh --smoke      # CPU check of the commands (shapes10, 1 epoch)
# Time: not measured yet (no GPU was lent to the sessions that wrote it). The work is 3 searches of 200 epochs
# (800,000 training images plus one hyper step per two weight steps each) and 36 evaluation runs of 200 epochs on
# 4,000 images (28.8 M images in all); every step prints its wall time, and steps.jsonl records it, so the first
# run states it. With a 15-minute device budget per session, run it in pieces: each call continues where the last
# stopped.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/hba-fidelity-gpu}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
SMOKE=0; [[ "${1:-}" == "--smoke" ]] && SMOKE=1
mkdir -p "$OUT"
if [[ $SMOKE == 1 ]]; then
  DATA=(--set data.dataset=shapes10 --set data.num_train=64 --set data.num_val=32 --set data.num_test=32
        --set data.batch_size=16 --set model.name=wrn-10-2 --set train.epochs=1 --set train.device=cpu)
  SEEDS=1
else
  [[ -d "$OUT/c10" ]] || $PY .data/build_cifar10.py "$OUT/c10"
  DATA=(--set "data.path=$OUT/c10" --set data.num_train=4000 --set data.num_val=10000 --set data.split_seed=0
        --set model.name=wrn-40-2 --set train.epochs=200 --set train.device=cuda)
  SEEDS=3
fi
COMMON=("${DATA[@]}" --set run.progress=false --set train.eval_every=0)
step() {  # step NAME COMMAND...: run it, record its wall time
  local name=$1 t0=$SECONDS; shift
  echo "=== $name"
  "$@"
  echo "{\"step\": \"$name\", \"wall_s\": $((SECONDS - t0)), \"smoke\": $SMOKE}" >> "$OUT/steps.jsonl"
}
for s in 0 1 2; do
  step "search-s$s" $PY -m hba_fast.cli search configs/cifar10-reduced.yaml "${COMMON[@]}" --set "train.seed=$s" \
    --set "run.out_dir=$OUT/search-s$s"
  [[ $SMOKE == 1 ]] && break
done
step controls $PY bench/schedule_controls.py "$OUT/search-s0/schedule.json" "$OUT/controls"
ARMS="baseline,cutout,autoaugment,randaugment,trivialaugment"
PBA_FILE=.data/pba/rcifar10_16_wrn.txt
if [[ -f $PBA_FILE ]] && $PY -m hba_fast.cli compare --help | grep -q "pba:"; then ARMS="$ARMS,pba:$PBA_FILE"; fi
for s in 0 1 2; do [[ -f "$OUT/search-s$s/schedule.json" ]] && ARMS="$ARMS,schedule:$OUT/search-s$s/schedule.json"; done
for c in prior final shuffled; do ARMS="$ARMS,schedule:$OUT/controls/$c/schedule.json"; done
step compare $PY -m hba_fast.cli compare configs/eval-cifar10.yaml "${COMMON[@]}" --set "run.out_dir=$OUT/compare" \
  --seeds "$SEEDS" --arms "$ARMS"
step table $PY bench/study_table.py "$OUT/compare" --json "$OUT/fidelity-gpu-runs.json" --md "$OUT/fidelity-gpu.md"
