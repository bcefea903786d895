"""Soak: a search of a few hundred rounds, with resident memory, open file descriptors and (on CUDA) the allocator's
peak sampled as it runs, so a leak shows as growth after warm-up.

    python bench/soak.py [--rounds N] [--smoke] [--out FILE]     # CUDA when there is one, else the CPU

The real `hba-fast search` flow (`hba_fast.search.search`: run folder, metrics, a checkpoint every epoch, the
evaluation pass) on generated shapes10 data; Trainer.run_round and Trainer._end_epoch are wrapped to sample after
every round and at every epoch's end:
    rss_mib   VmRSS of /proc/self/status, after round `warmup` (default 100) and at the end: growth = end - warm-up
    fds       entries of /proc/self/fd at the same two moments: growth must be 0 (a leaked log, lock or DALI handle)
    cuda      torch.cuda.max_memory_allocated of each epoch (the peak is reset at each epoch's start; the boundary
              reads the device anyway): growth = max over the epochs after the first two (the weight-steps-only
              epoch, then the epoch the hyper steps start in and the round's CUDA graph is captured again) minus the
              first of them; the allocator replays the same allocations every epoch, so it must not grow
Writes JSON lines (stdout, and appended to --out): `metric` soak_rss_growth_mib / soak_fd_growth /
soak_cuda_peak_growth_mib rows with `value`, `goal`, `cmp` (bench/targets.py) and every sample; --smoke marks the
rows (CPU, tiny sizes: code paths only). tests/test_soak.py runs it on the CPU and asserts the bounds;
bench/gpu_suite.sh runs it on the GPU (stage soak), where the CUDA row is the point.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import torch  # noqa: E402
from targets import goal  # noqa: E402


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024  # kB
    raise RuntimeError("no VmRSS in /proc/self/status")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def soak(rounds: int, warmup: int, out_dir: Path, cuda: bool, smoke: bool) -> dict:
    from hba_fast.config import load_config
    from hba_fast.engine.trainer import Trainer
    from hba_fast.search import search

    batch, size, t_train = (8, 16, 2) if not cuda or smoke else (128, 32, 2)
    steps = 30  # weight steps per epoch
    epochs = -(-rounds * t_train // steps)
    cfg = load_config(None, [
        "model.name=wrn-10-2" if not cuda else "model.name=wrn-16-2", f"data.image_size={size}",
        f"data.batch_size={batch}", f"data.num_train={steps * batch}", f"data.num_val={4 * batch}",
        f"data.num_test={batch}", f"train.epochs={epochs}", f"train.steps_per_epoch={steps}", "train.log_every=10",
        f"train.t_train={t_train}", "run.progress=false", f"run.out_dir={out_dir}", "train.hyper_warmup_epochs=1",
        "train.device=" + ("cuda" if cuda else "cpu"), "data.backend=torch"])
    samples = {"round": [], "rss_mib": [], "fds": []}
    peaks: list[int] = []
    count = {"n": 0}
    run_round, end_epoch, start_epoch = Trainer.run_round, Trainer._end_epoch, Trainer._start_epoch

    def sampled_round(self, n_weight, n_hyper):
        run_round(self, n_weight, n_hyper)
        count["n"] += 1
        if count["n"] in (warmup, rounds) or count["n"] % 25 == 0:
            samples["round"].append(count["n"])
            samples["rss_mib"].append(round(rss_mib(), 2))
            samples["fds"].append(open_fds())

    def started(self):
        if cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        start_epoch(self)

    def ended(self, images_per_s):
        if cuda:
            torch.cuda.synchronize(self.device)
            peaks.append(torch.cuda.max_memory_allocated(self.device))
        end_epoch(self, images_per_s)

    Trainer.run_round, Trainer._start_epoch, Trainer._end_epoch = sampled_round, started, ended
    try:
        t0 = time.perf_counter()
        search(cfg)
        wall = time.perf_counter() - t0
    finally:
        Trainer.run_round, Trainer._start_epoch, Trainer._end_epoch = run_round, start_epoch, end_epoch
    at = {r: i for i, r in enumerate(samples["round"])}
    w, e = at[warmup], at[max(samples["round"])]
    return {"rounds": count["n"], "warmup": warmup, "epochs": epochs, "batch": batch, "image_size": size,
            "wall_s": round(wall, 1), "samples": samples, "cuda_peaks_mib": [round(p / 2**20, 2) for p in peaks],
            "rss_growth_mib": round(samples["rss_mib"][e] - samples["rss_mib"][w], 2),
            "fd_growth": samples["fds"][e] - samples["fds"][w],
            "cuda_peak_growth_mib": (round((max(peaks[2:]) - peaks[2]) / 2**20, 3) if len(peaks) > 3 else None)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=100, help="the round after which growth is measured")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes (the suite's CPU smoke run): code paths only")
    ap.add_argument("--out", type=Path, help="append the rows to this JSON-lines file")
    args = ap.parse_args(argv)
    if args.smoke:
        args.rounds, args.warmup = min(args.rounds, 60), min(args.warmup, 20)
    cuda = torch.cuda.is_available()
    with tempfile.TemporaryDirectory() as tmp:
        result = soak(args.rounds, args.warmup, Path(tmp) / "run", cuda, args.smoke)
    from suite_rows import environment

    env = {**environment(), **({"smoke": True} if args.smoke else {})}
    rows = [{"bench": "soak", "metric": "soak_rss_growth_mib", "value": result["rss_growth_mib"],
             **dict(zip(("goal", "cmp"), goal("soak_rss_growth_mib"))), **env, **result},
            {"bench": "soak", "metric": "soak_fd_growth", "value": result["fd_growth"],
             **dict(zip(("goal", "cmp"), goal("soak_fd_growth"))), **env}]
    if cuda:
        rows.append({"bench": "soak", "metric": "soak_cuda_peak_growth_mib", "value": result["cuda_peak_growth_mib"],
                     **dict(zip(("goal", "cmp"), goal("soak_cuda_peak_growth_mib"))), **env,
                     "cuda_peaks_mib": result["cuda_peaks_mib"]})
    text = "".join(json.dumps(r) + "\n" for r in rows)
    print(text, end="", flush=True)
    if args.out:
        with open(args.out, "a") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
