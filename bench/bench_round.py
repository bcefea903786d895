"""The end-to-end trainer round: plain training vs HBA search strategies, eager vs CUDA graphs vs torch.compile.

    python bench/bench_round.py --data CIFAR_ROOT_OR_shapes10 --model wrn-40-2 --batch 128 \
        --strategies none,first_bn,conv+bn --modes eager,graphs,compile --steps N --out FILE.jsonl [--smoke]

What is timed: `Trainer.run_round`, exactly what `hba-fast search` runs per round (Algorithm 1: t_train = 2 weight
steps, then t_val = 1 hyper step for a search): the feed's preparation (indices copied into static buffers), then
gather from device-resident uint8 arrays, the PBA policy (static form), the CIFAR recipe, forward, backward, fused
SGD, and for a search the hyper step (Adam on lambda). After warm-up rounds (WARMUP_ROUNDS of graphs.py plus one:
cuDNN's benchmark, Triton's autotuner, torch.compile and the graph capture all happen there), `N // 2` rounds are
timed with CUDA events (time.perf_counter on the CPU).

The honest baseline, in the same run: strategy `none`, the plain model trained with the same pipeline and the same
policy cost (a fixed policy: lambda's initial values for every sample), t_val = 0. Reported per (strategy, mode):
ms per round, training images per second, and
    search_over_plain = (search round time / training images) / (plain round time / training images), same mode:
                        the issue's first target (<= 1.35 for first_bn, <= 1.8 for conv+bn on an H100/H200);
    graphs_speedup    = eager ms per round / graphs ms per round, same strategy (target >= 1.3x at WRN-40-2 b128).
Modes: eager (train.graphs=off), graphs (train.graphs=on), compile (train.compile=default, graphs off),
graphs+compile, max-autotune (train.compile=max-autotune, graphs on), and legacy: the step loop before the round
existed (the pipeline's iterators with the indexed policy, per step), for the cost of the sync-free round itself.

Output: a table on stdout, and one JSON line per (strategy, mode) appended to --out with the device, versions and git
sha (HBA_GIT_SHA on a copy without .git). --data: `shapes10` (generated) or a CIFAR-10 folder (cifar-10-batches-py or
its parent; the first images after the 10,000 held out as the validation split). --smoke: tiny sizes on the CPU in
seconds (wrn-16-2, batch 8, 16x16; graphs = the capture-ready round run eagerly; torch.compile with the 'eager'
backend: the wiring, not inductor), rows marked "smoke": true.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hba_fast.augment.space import SearchSpace  # noqa: E402
from hba_fast.config import DataConfig, OptimConfig, TrainConfig  # noqa: E402
from hba_fast.data.datasets import load_splits  # noqa: E402
from hba_fast.data.torch_pipeline import TorchPipeline  # noqa: E402
from hba_fast.engine import graphs  # noqa: E402
from hba_fast.engine.hyperparams import Hyperparams  # noqa: E402
from hba_fast.engine.trainer import Trainer  # noqa: E402
from hba_fast.models import build_model  # noqa: E402
from hba_fast.run.environment import environment as hba_environment  # noqa: E402
from hba_fast.run.session import Run  # noqa: E402
from hba_fast.schedule.file import Schedule  # noqa: E402
from hba_fast.schedule.sampler import ScheduleSampler  # noqa: E402

T_TRAIN = 2
MODES = {  # mode -> (train.graphs, train.compile)
    "eager": ("off", "off"), "graphs": ("on", "off"), "compile": ("off", "default"),
    "graphs+compile": ("on", "default"), "max-autotune": ("on", "max-autotune"), "legacy": ("off", "off"),
}


def environment(device: torch.device) -> dict:
    """This script's environment keys, from the package's one helper (hba_fast.run.environment)."""
    env = hba_environment(device)
    return {"torch": env["torch"], "python": env["python"], "host": env["hostname"],
            "device": env.get("gpu") or "cpu", "cuda": env["cuda"], "threads": env["cpu_threads"],
            "triton": env["triton"], "git_sha": env["git_sha"], "git_dirty": env["git_dirty"]}


def data_config(data: str, batch: int, image_size: int, train_images: int) -> DataConfig:
    common = {"batch_size": batch, "recipe": "cifar", "backend": "torch", "device_resident": True}
    if data == "shapes10":
        return DataConfig(dataset="shapes10", image_size=image_size, num_train=train_images,
                          num_val=max(2 * batch, 512), num_test=batch, **common)
    return DataConfig(dataset="cifar10", path=data, num_train=min(train_images, 40_000), num_val=10_000,
                      num_test=1000, **common)


def build(splits, data_cfg, strategy: str, mode: str, model: str, device: torch.device, out: Path,
          amp: str, steps_per_epoch: int) -> Trainer:
    """A trainer as `hba-fast search` builds it (or, for `none`, a plain one with a fixed policy), seeded."""
    torch.manual_seed(0)
    search = strategy != "none"
    hyper = None
    if search:
        hyper = Hyperparams(SearchSpace(), 1.0, 0.03, device, generator=torch.Generator(device).manual_seed(1))
        sampler = hyper.sampler
    else:  # the plain baseline pays for the same policy: lambda's initial values, for every sample
        probs, mags = SearchSpace().decode(SearchSpace().init_lam())
        sampler = ScheduleSampler(Schedule(probs[None], mags[None]), 1)
    pipeline = TorchPipeline(data_cfg, splits, sampler, device, seed=0)
    net = build_model(model, splits.num_classes, strategy)
    channels_last = device.type == "cuda"
    net = net.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
    graphs_mode, compile_mode = MODES[mode]
    cfg = TrainConfig(epochs=1, t_train=T_TRAIN, t_val=1 if search else 0, amp=amp, graphs=graphs_mode,
                      compile=compile_mode, steps_per_epoch=steps_per_epoch, log_every=10**6, eval_every=0)
    run = Run.local(out / f"{strategy}-{mode}", device)
    return Trainer(net, pipeline, run, OptimConfig(lr=0.05, hyper_lr=0.03), cfg, hyper, channels_last)


def legacy_round(trainer: Trainer, state: dict) -> None:
    """One round the way the trainer ran before the sync-free round: batches from the pipeline's iterators (indexed
    policy, per step), the same weight and hyper step arithmetic."""
    if "it" not in state:
        state["it"] = iter(trainer.pipeline.train_epoch(0))
    for _ in range(T_TRAIN):
        trainer.weight_step(next(state["it"]))
    for _ in range(trainer.cfg.t_val):
        trainer.hyper_step(trainer.pipeline.val_batch())


def time_rounds(trainer: Trainer, mode: str, warmup: int, rounds: int, device: torch.device) -> tuple[float, float]:
    """(seconds of warm-up, ms per timed round)."""
    trainer._start_epoch()
    state: dict = {}
    t_val = trainer.cfg.t_val

    def one():
        if mode == "legacy":
            legacy_round(trainer, state)
        else:
            trainer.run_round(T_TRAIN, t_val)

    cuda = device.type == "cuda"
    t0 = time.perf_counter()
    for _ in range(warmup):
        one()
    if cuda:
        torch.cuda.synchronize(device)
    warm_s = time.perf_counter() - t0
    if cuda:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(rounds):
            one()
        end.record()
        end.synchronize()
        return warm_s, start.elapsed_time(end) / rounds
    t0 = time.perf_counter()
    for _ in range(rounds):
        one()
    return warm_s, (time.perf_counter() - t0) * 1e3 / rounds


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="shapes10", help="shapes10, or a CIFAR-10 folder (cifar-10-batches-py)")
    ap.add_argument("--model", default="wrn-40-2")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--strategies", default="none,first_bn,conv+bn")
    ap.add_argument("--modes", default="eager,graphs,compile")
    ap.add_argument("--steps", type=int, default=100, help="timed weight steps (rounds of 2 weight steps)")
    ap.add_argument("--out", required=True, help="JSON lines are appended here")
    ap.add_argument("--amp", default="auto", choices=["auto", "bf16", "off"], help="train.amp (auto: bf16 on CUDA)")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU in seconds (code paths only)")
    args = ap.parse_args(argv)
    strategies = [s for s in args.strategies.split(",") if s]
    modes = [m for m in args.modes.split(",") if m]
    for m in modes:
        if m not in MODES:
            ap.error(f"unknown mode {m!r}; modes are {', '.join(MODES)}")
    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    model, batch, size, steps, data = args.model, args.batch, 32, args.steps, args.data
    if args.smoke:
        model, batch, size, steps, data = "wrn-16-2", min(batch, 8), 16, 2, "shapes10"
        graphs.COMPILE_OPTIONS.update({"default": {"backend": "eager"}, "max-autotune": {"backend": "eager"}})
    warmup = graphs.WARMUP_ROUNDS + 2 if not args.smoke else 1
    rounds = max(1, steps // T_TRAIN)
    spe = (warmup + rounds) * T_TRAIN
    data_cfg = data_config(data, batch, size, spe * batch)
    t0 = time.perf_counter()
    splits = load_splits(data_cfg)
    if len(splits.train.labels) // batch < spe:  # CIFAR-10 holds 40,000 training images beside the 10,000 val
        rounds = len(splits.train.labels) // batch // T_TRAIN - warmup
        spe = (warmup + rounds) * T_TRAIN
        print(f"# only {len(splits.train.labels)} training images: {rounds} timed rounds", flush=True)
    env = environment(device)
    print(f"# bench_round: {model} batch {batch} on {env['device']} ({data}: {len(splits.train.labels)} train "
          f"images loaded in {time.perf_counter() - t0:.1f} s); {warmup} warm-up + {rounds} timed rounds"
          + (" [smoke]" if args.smoke else ""), flush=True)
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench_round_{os.getpid()}"
    rows = []
    for strategy in strategies:
        for mode in modes:
            if mode in ("compile", "graphs+compile", "max-autotune"):
                torch._dynamo.reset()
            trainer = build(splits, data_cfg, strategy, mode, model, device, tmp, args.amp, spe)
            warm_s, ms = time_rounds(trainer, mode, warmup, rounds, device)
            graphed = trainer.rounds.graph is not None
            rows.append({"bench": "round", "strategy": strategy, "mode": mode, "model": model, "batch": batch,
                         "image_size": size, "data": "shapes10" if data == "shapes10" else "cifar10",
                         "amp": args.amp, "t_train": T_TRAIN, "t_val": trainer.cfg.t_val, "rounds": rounds,
                         "warmup_rounds": warmup, "warmup_s": round(warm_s, 2), "ms_per_round": round(ms, 3),
                         "train_images_per_s": round(T_TRAIN * batch / ms * 1e3, 1), "cuda_graph": graphed,
                         "smoke": args.smoke, **env, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
            print(f"  {strategy:9s} {mode:15s} {ms:9.2f} ms/round  {rows[-1]['train_images_per_s']:9.0f} img/s"
                  f"  (warm-up {warm_s:.1f} s{', CUDA graph' if graphed else ''})", flush=True)
            del trainer
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
    by = {(r["strategy"], r["mode"]): r for r in rows}
    for r in rows:
        plain = by.get(("none", r["mode"]))
        if r["strategy"] != "none" and plain is not None:
            r["search_over_plain"] = round(r["ms_per_round"] / plain["ms_per_round"], 3)
        eager = by.get((r["strategy"], "eager"))
        if r["mode"] != "eager" and eager is not None:
            r["speedup_vs_eager"] = round(eager["ms_per_round"] / r["ms_per_round"], 3)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "a") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    print(f"\n{'strategy':9s} {'mode':15s} {'ms/round':>9s} {'img/s':>9s} {'search/plain':>12s} {'vs eager':>9s}")
    for r in rows:
        ratio = f"{r['search_over_plain']:.3f}" if "search_over_plain" in r else "-"
        speed = f"{r['speedup_vs_eager']:.2f}x" if "speedup_vs_eager" in r else "-"
        print(f"{r['strategy']:9s} {r['mode']:15s} {r['ms_per_round']:9.2f} {r['train_images_per_s']:9.0f} "
              f"{ratio:>12s} {speed:>9s}")
    print(f"# {len(rows)} rows appended to {out} ({env['device']}, torch {env['torch']}, sha {env['git_sha']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
