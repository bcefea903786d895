"""The open choices of the hyper step, measured side by side (issue 9, section 4): batch norm in the hyper step
(train.hyper_bn batch | running), the hyper-BN initialisation (model.hyper_bn_bias_u, model.hyper_bn_v_std) and
a warm-up before the first hyper step (train.hyper_warmup_epochs).

For every variant (one setting changed from the reference) the script runs a short search on real CIFAR-10 and
measures, before training (epoch 0) and at the end:
  signal      the lambda-gradient of the validation loss on K fixed validation batches, in both BN modes:
              loo_cos = mean over batches of cos(g_k, mean of the other K - 1) (does one batch point where the
              mean points?), half_cos = cos(mean of the first K/2, mean of the last K/2) (is the mean itself
              stable?), modes_cos = cos(mean_batch, mean_running) and the top-5 entries of each mean, shift_share
              = |g through the BN shift path (bias_v)| / (|g through the scale path| + |g through the shift|)
  movement    how far lambda moved (max / mean |lambda - lambda_0|), its range, the decoded schedule's ratio of
              largest to smallest probability and its sum of normalised magnitudes (the paper's Figure 4 numbers)
  quality     the hypernet theta(lambda)'s validation loss and error (eval mode) on held-out validation images,
              and the mean hyper-step loss of the last epoch
Output: a markdown table on stdout and one JSON document (--out) with every number, the commands, the git sha,
versions and the machine. CPU-sized: wrn-16-2, a few epochs; see docs/results/hyper-options-cpu.md.

    PYTHONPATH=$PWD python bench/hyper_options.py --data /work/data/cifar10 --epochs 8 \
        --out docs/results/hyper-options-cpu.json
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from hba_fast.augment.ops import OPS
from hba_fast.augment.space import SearchSpace
from hba_fast.config import load_config
from hba_fast.data import build_pipeline
from hba_fast.data.datasets import load_splits
from hba_fast.engine.hyperparams import Hyperparams
from hba_fast.engine.trainer import Trainer, hyper_bn_mode
from hba_fast.models import build_model
from hba_fast.models.layers import HyperBatchNorm2d, init_hyper_bn
from hba_fast.run.environment import environment
from hba_fast.run.session import Run

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = {"train.hyper_bn": "batch", "model.hyper_bn_bias_u": 0.0, "model.hyper_bn_v_std": 0.01,
             "train.hyper_warmup_epochs": 0}
VARIANTS = {  # name -> the settings that differ from REFERENCE
    "reference": {},
    "running": {"train.hyper_bn": "running"},
    "bias_u=1": {"model.hyper_bn_bias_u": 1.0},
    "running+bias_u=1": {"train.hyper_bn": "running", "model.hyper_bn_bias_u": 1.0},
    "v_std=0.1": {"model.hyper_bn_v_std": 0.1},
    "warmup=2": {"train.hyper_warmup_epochs": 2},
    "chosen": {"train.hyper_bn": "running", "model.hyper_bn_bias_u": 1.0},
}


def lam_names() -> list[str]:
    space = SearchSpace()
    names = space.slot_names()
    return [f"p:{n}" for n in names] + [f"m:{names[j]}" for j in space.mag_slots]


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(F.cosine_similarity(a, b, dim=0, eps=1e-30))


def lam_gradients(model, lam: torch.Tensor, batches, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-batch gradients of the validation loss wrt lambda (K, 54), and the part of each that flows through the
    hyper-BN shift path bias_v (K, 54), exactly: g_shift = bias_v^T (dL/dbeta * bias_u), summed over layers."""
    bns = [m for m in model.modules() if isinstance(m, HyperBatchNorm2d)]
    grads, shifts = [], []
    for x, y in batches:
        lam_ = lam.detach().clone().requires_grad_(True)
        kept: list[tuple[HyperBatchNorm2d, torch.Tensor]] = []
        originals = {}
        for m in bns:  # keep each layer's beta(lambda) to read dL/dbeta
            originals[m] = m.affine

            def affine(lam_in, m=m, f=m.affine, kept=kept):
                gamma, beta = f(lam_in)
                kept.append((m, beta))
                return gamma, beta

            m.affine = affine
        try:
            with hyper_bn_mode(model, mode):
                loss = F.cross_entropy(model(x, lam_), y)
            out = torch.autograd.grad(loss, [lam_] + [b for _, b in kept])
        finally:
            for m, f in originals.items():
                m.affine = f
        grads.append(out[0])
        shifts.append(sum(((d * m.bias_u) @ m.bias_v) for (m, _), d in zip(kept, out[1:])))
    return torch.stack(grads), torch.stack(shifts)


def signal(model, lam, batches) -> dict:
    names, res, means = lam_names(), {}, {}
    for mode in ("batch", "running"):
        g, shift = lam_gradients(model, lam, batches, mode)  # (K, 54)
        k = g.shape[0]
        total = g.sum(0)
        loo = [_cos(g[i], (total - g[i]) / (k - 1)) for i in range(k)]
        mean = g.mean(0)
        means[mode] = mean
        scale = g - shift
        res[mode] = {
            "loo_cos": round(sum(loo) / k, 3),
            "half_cos": round(_cos(g[: k // 2].mean(0), g[k // 2:].mean(0)), 3),
            "mean_norm": float(f"{mean.norm():.3e}"),
            "per_batch_norm": float(f"{g.norm(dim=1).mean():.3e}"),
            "shift_share": round(float(shift.norm(dim=1).mean() / (scale.norm(dim=1).mean()
                                                                   + shift.norm(dim=1).mean() + 1e-30)), 3),
            "top5": [names[i] for i in mean.abs().topk(5).indices.tolist()],
        }
    top_b, top_r = set(res["batch"]["top5"]), set(res["running"]["top5"])
    res["modes_cos"] = round(_cos(means["batch"], means["running"]), 3)
    res["top5_shared"] = len(top_b & top_r)
    return res


@torch.no_grad()
def hypernet_quality(model, lam, batches) -> dict:
    model.eval()
    loss, wrong, n = 0.0, 0, 0
    for x, y in batches:
        logits = model(x, lam)
        loss += float(F.cross_entropy(logits, y, reduction="sum"))
        wrong += int((logits.argmax(1) != y).sum())
        n += len(y)
    model.train()
    return {"val_loss": round(loss / n, 4), "val_error": round(wrong / n, 4)}


def schedule_shape(entry: dict) -> dict:
    """Figure 4's two numbers for one epoch: sum of normalised magnitudes, largest / smallest op probability."""
    space = SearchSpace()
    probs, mags = torch.tensor(entry["probs"]), torch.tensor(entry["mags"])
    norm = 0.0
    for j, k in enumerate(space.slot_ops):
        op = OPS[k]
        if op.has_magnitude:
            norm += (float(mags[j]) - op.lo) / (op.hi - op.lo)
    per_op = torch.zeros(len(OPS)).index_add_(0, torch.tensor(space.slot_ops), probs)  # both copies
    return {"mag_sum": round(norm, 3), "prob_ratio": round(float(per_op.max() / per_op.min().clamp(min=1e-9)), 2)}


def _setup(name: str, settings: dict, args):
    """A search with `settings` over REFERENCE: (trainer, fixed signal batches, held-out quality batches, run dir)."""
    overrides = [f"{k}={v}" for k, v in {**REFERENCE, **settings}.items()]
    overrides += [f"data.path={args.data}", f"model.name={args.model}", f"train.epochs={args.epochs}",
                  "train.eval_every=0", "train.device=cpu", "run.progress=false", f"train.seed={args.seed}",
                  f"data.num_val={args.num_val}", "data.num_test=100", "train.log_every=10"]
    cfg = load_config(ROOT / "configs" / "cifar10-reduced.yaml", overrides)
    torch.manual_seed(cfg.train.seed)
    out = Path(args.work) / name.replace("+", "_").replace("=", "")
    out.mkdir(parents=True, exist_ok=True)
    for f in out.glob("*"):
        f.unlink()
    run = Run.local(out)
    splits = load_splits(cfg.data)
    space = SearchSpace()
    hyper = Hyperparams(space, cfg.policy.sigma, cfg.optim.hyper_lr, "cpu",
                        generator=torch.Generator().manual_seed(cfg.train.seed * 1000))
    pipeline = build_pipeline(cfg.data, splits, hyper.sampler, torch.device("cpu"), seed=cfg.train.seed)
    model = build_model(cfg.model.name, splits.num_classes, cfg.model.strategy, space.lam_dim)
    init_hyper_bn(model, cfg.model.hyper_bn_bias_u, cfg.model.hyper_bn_v_std)
    # Fixed batches, the same for every variant: K for the gradient signal, then held-out ones for the quality.
    val = splits.val
    mean = torch.tensor(splits.mean).view(1, 3, 1, 1)
    std = torch.tensor(splits.std).view(1, 3, 1, 1)
    clean = lambda i: ((val.images[i].float() / 255 - mean) / std, val.labels[i])  # noqa: E731
    bs = cfg.data.batch_size
    sig_batches = [clean(slice(k * bs, (k + 1) * bs)) for k in range(args.signal_batches)]
    start = args.signal_batches * bs
    q_batches = [clean(slice(s, min(s + 500, len(val.labels)))) for s in range(start, len(val.labels), 500)]

    return Trainer(model, pipeline, run, cfg.optim, cfg.train, hyper), sig_batches, q_batches, out


def run_variant(name: str, settings: dict, args) -> dict:
    trainer, sig_batches, q_batches, out = _setup(name, settings, args)
    model, hyper = trainer.model, trainer.hyper
    lam0 = hyper.lam.detach().clone()
    t0 = time.time()
    res = {"variant": name, "settings": {**REFERENCE, **settings}, "signal_init": signal(model, hyper.lam, sig_batches)}
    trainer.fit()
    lam = hyper.lam.detach()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    last = [r["hyper_val_loss"] for r in rows if r.get("kind") == "train" and r.get("epoch") == args.epochs - 1
            and r.get("hyper_val_loss") is not None]
    res.update({
        "signal_end": signal(model, hyper.lam, sig_batches),
        "lam_move_max": round(float((lam - lam0).abs().max()), 3),
        "lam_move_mean": round(float((lam - lam0).abs().mean()), 3),
        "lam_min": round(float(lam.min()), 3), "lam_max": round(float(lam.max()), 3),
        "schedule_last": schedule_shape(hyper.schedule[-1]),
        "schedule_peak_mag_sum": max(schedule_shape(e)["mag_sum"] for e in hyper.schedule),
        "hyper_step_loss_last_epoch": round(sum(last) / len(last), 4) if last else None,
        **hypernet_quality(model, lam, q_batches),
        "seconds": round(time.time() - t0, 1),
    })
    return res


def run_trajectory(name: str, settings: dict, args) -> dict:
    """The warm-up question: the mean lambda-gradient (both BN modes) at every epoch boundary of one search, and
    how its direction relates to the next epoch's and to the last one's: hyper steps taken before the direction
    settles push lambda where later gradients do not."""
    trainer, sig_batches, _, _ = _setup(name + "-trajectory", settings, args)
    grads: list[dict] = []

    def snapshot():
        grads.append({mode: lam_gradients(trainer.model, trainer.hyper.lam, sig_batches, mode)[0]
                      for mode in ("batch", "running")})

    end_epoch = trainer._end_epoch

    def end_epoch_then_snapshot(images_per_s):
        end_epoch(images_per_s)
        snapshot()

    snapshot()
    trainer._end_epoch = end_epoch_then_snapshot
    t0 = time.time()
    trainer.fit()
    rows = []
    for e, g in enumerate(grads):
        row = {"epoch_boundary": e}
        for mode in ("batch", "running"):
            k, mean = g[mode].shape[0], g[mode].mean(0)
            total = g[mode].sum(0)
            row[f"{mode}_loo_cos"] = round(sum(_cos(g[mode][i], (total - g[mode][i]) / (k - 1))
                                               for i in range(k)) / k, 3)
            if e + 1 < len(grads):
                row[f"{mode}_cos_next"] = round(_cos(mean, grads[e + 1][mode].mean(0)), 3)
            row[f"{mode}_cos_last"] = round(_cos(mean, grads[-1][mode].mean(0)), 3)
        row["modes_cos"] = round(_cos(g["batch"].mean(0), g["running"].mean(0)), 3)
        rows.append(row)
    return {"variant": name + " (trajectory)", "settings": {**REFERENCE, **settings}, "trajectory": rows,
            "seconds": round(time.time() - t0, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="folder holding cifar-10-batches-py/ (build_cifar10.py)")
    p.add_argument("--model", default="wrn-16-2")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--num-val", type=int, default=10000)
    p.add_argument("--signal-batches", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--work", default="runs/hyper-options")
    p.add_argument("--out", default=None, help="JSON file for the results")
    p.add_argument("--trajectory", action="store_true", help="the gradient at every epoch boundary instead "
                   "(run_trajectory), for the warm-up question")
    args = p.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    results = []
    doc = {"command": "PYTHONPATH=$PWD python bench/hyper_options.py " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v is not None),
        "environment": {**environment(torch.device("cpu")), "cpu": platform.processor() or platform.machine(),
                        "threads": torch.get_num_threads()}, "results": results}
    for name in args.variants.split(","):
        r = (run_trajectory if args.trajectory else run_variant)(name, VARIANTS[name], args)
        results.append(r)
        print(json.dumps(r), flush=True)
        if args.out:
            Path(args.out).write_text(json.dumps(doc, indent=1) + "\n")
    if args.trajectory:
        for r in results:
            print(f"\n{r['variant']}: " + json.dumps(r["trajectory"], indent=1))
        return
    print("\n| variant | loo_cos batch / running (init -> end) | modes_cos (end) | top5 shared | shift share "
          "(end, batch) | lam moved max / mean | prob ratio | mag sum (peak / last) | hypernet val loss / error |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        si, se = r["signal_init"], r["signal_end"]
        print(f"| {r['variant']} | {si['batch']['loo_cos']} / {si['running']['loo_cos']} -> "
              f"{se['batch']['loo_cos']} / {se['running']['loo_cos']} | {se['modes_cos']} | {se['top5_shared']} | "
              f"{se['batch']['shift_share']} | {r['lam_move_max']} / {r['lam_move_mean']} | "
              f"{r['schedule_last']['prob_ratio']} | {r['schedule_peak_mag_sum']} / {r['schedule_last']['mag_sum']} | "
              f"{r['val_loss']} / {r['val_error']} |")


if __name__ == "__main__":
    main()
