"""`hba-fast compare`: the paper's evaluation protocol (Table 4) for several augmentation arms side by side.

    hba-fast compare CONFIG --arms baseline,cutout,autoaugment,randaugment,trivialaugment,schedule:PATH --seeds 3

Arms: the names `hba-fast train --augment` takes (hba_fast/augment/baselines.py: baseline, cutout, autoaugment[:POLICY],
randaugment[:N,M], trivialaugment), `schedule:PATH` (a schedule.json of `hba-fast search`; several may be given)
and `pba:PATH` (a PBA schedule file, e.g. PBA's published rcifar10_16_wrn.txt: the paper's Table 4 PBA column
without Ray or TensorFlow; arm `pba-<file stem>`, replayed for the run's epochs by PBA's own rule, train.py).
Every (arm, seed) pair is one `hba-fast train` run (train.py) in its own folder under the compare folder
(run.out_dir): <out>/<arm>/seed<k>, with train.seed = the config's seed + k. Every arm trains on the same splits
(the data section is shared; only the augmentation and the seed change).

Resume: a pair whose result.json exists for the configured epochs is finished and read back (not rerun), after
checking that its folder was made with this config; any other pair (also one whose result.json is unreadable) runs
`train`, which resumes from the pair's checkpoint when there is one and writes result.json again. So a compare
run killed at any moment continues where it stopped.

Outputs in the compare folder, written atomically once every pair is done (rank 0):
    compare.json   the config, arms, seeds, environment, every pair's result, and per arm: mean and std (sample
                   std over seeds) of the test error, the per-seed errors, mean training time and images/s
                   (strict JSON: a number that is not finite is written as null)
    compare.md     that table in markdown (also printed)
    compare.png    bars of the mean test error per arm, std error bars, one dot per seed
Training time is `train_s` of each run's result.json (seconds in training steps summed over its epochs) and
img/s its training throughput; neither counts the test evaluation.

Several processes (torchrun, as `hba-fast search`): the process group is joined once here, and every pair runs
on all ranks in turn (each pair's run finds the group there and leaves it).

Several `hba-fast compare --only-seed K` processes may share one compare folder: each pair's run locks its own folder
(hba_fast/run/lock.py: a pair another process is running stops this one with one line), the compare folder is locked
only while the table is written. A stop signal (SIGTERM, SIGINT, SIGUSR1) stops the pair in training with its
checkpoint (hba_fast/run/stop.py) and starts no other; the same command continues there.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from . import atomic
from .augment.arms import AUGMENT_HELP, parse_augment
from .config import Config
from .errors import ConfigError, StopRequested
from .run.distributed import setup_distributed, teardown
from .run.environment import environment
from .run.folder import check_run_folder
from .run.lock import RunLock
from .run.log import RunLog
from .run.session import pick_device
from .run.stop import SIGNALS, StopAgreement, signal_name
from .schedule.file import read_schedule
from .schedule.pba import PREFIX as PBA_PREFIX
from .schedule.pba import split_spec
from .train import evaluation_config, train


@dataclass(frozen=True)
class Arm:
    """One column of the comparison: a hand-made augmentation (`augment`) or a learned schedule (`schedule`)."""

    name: str  # as shown in the table and used as the folder name
    augment: str | None = None
    schedule: str | None = None


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "arm"


def parse_arms(text: str) -> list[Arm]:
    """'baseline,randaugment:2,9,schedule:runs/a/schedule.json,pba:rcifar10_16_wrn.txt' -> arms; a bare number
    continues the previous item (randaugment:N,M). ConfigError on unknown names, missing schedules or repeated arms."""
    items: list[str] = []
    for token in (t.strip() for t in text.split(",")):
        if token.isdigit() and items:
            items[-1] += "," + token
        elif token:
            items.append(token)
    if not items:
        raise ConfigError(f"--arms needs at least one arm: {AUGMENT_HELP}, schedule:PATH or pba:FILE")
    arms: list[Arm] = []
    for item in items:
        if item.startswith("schedule:"):
            path = item[len("schedule:"):]
            read_schedule(path)  # a missing or broken schedule stops here, before any training
            p = Path(path)
            name = "schedule-" + _slug(p.parent.name if p.name == "schedule.json" and p.parent.name else p.stem)
            arms.append(Arm(name, schedule=path))
        elif item.startswith(PBA_PREFIX):
            read_schedule(item)  # PBA's file read through, before any training
            arms.append(Arm("pba-" + _slug(split_spec(item)[0].stem), schedule=item))
        else:
            augment = str(parse_augment(item))
            arms.append(Arm(_slug(augment.replace(":", "-").replace(",", "-")), augment=augment))
    names = [a.name for a in arms]
    for i, arm in enumerate(arms):  # two schedules from folders of the same name: number them
        if names.count(arm.name) > 1 and arm.schedule is not None:
            arms[i] = dataclasses.replace(arm, name=f"{arm.name}-{names[:i + 1].count(arm.name)}")
    dupes = sorted({a.name for a in arms if [b.name for b in arms].count(a.name) > 1})
    if dupes:
        raise ConfigError(f"--arms lists {', '.join(dupes)} more than once; give each arm once")
    return arms


def _pair_config(cfg: Config, arm: Arm, seed: int, out: Path) -> Config:
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, seed=cfg.train.seed + seed),
                               run=dataclasses.replace(cfg.run, out_dir=str(out / arm.name / f"seed{seed}")))


def finished_result(cfg: Config, arm: Arm) -> dict | None:
    """The pair's result.json when the pair is finished for this config, else None (it must run or resume)."""
    folder = Path(cfg.run.out_dir)
    result_file = folder / "result.json"
    if not result_file.exists():
        return None
    try:
        result = json.loads(result_file.read_text())
    except (OSError, ValueError):  # damaged (edited, or copied in part): `train` writes it again
        return None
    if not isinstance(result, dict) or not isinstance(result.get("test_error"), (int, float)):
        return None
    if result.get("epochs") != cfg.train.epochs:
        return None  # trained for another number of epochs: `train` extends (or refuses) it
    eval_cfg, record = evaluation_config(cfg, arm.schedule, arm.augment)
    check_run_folder(folder, {**eval_cfg.to_dict(), **record}, resume=True,
                     free=eval_cfg.free_on_resume("train"))  # made with this config?
    return result


def summarise(arms: list[Arm], results: dict[tuple[str, int], dict], seeds: int) -> list[dict]:
    rows = []
    for arm in arms:
        rs = [results[(arm.name, k)] for k in range(seeds)]
        errors = [r["test_error"] for r in rs]
        rows.append({
            "arm": arm.name, "augment": arm.augment, "schedule": arm.schedule, "seeds": seeds,
            "test_error_mean": statistics.fmean(errors),
            "test_error_std": statistics.stdev(errors) if len(errors) > 1 else None,
            "test_errors": errors,
            "train_s_mean": _mean([r.get("train_s") for r in rs]),
            "images_per_s_mean": _mean([r.get("images_per_s") for r in rs]),
        })
    return rows


def _finite(x):
    """`x` with every float that is not finite (a diverged run's error) as None: compare.json stays strict JSON."""
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return None if isinstance(x, float) and not math.isfinite(x) else x


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def markdown_table(rows: list[dict]) -> str:
    def pct(v):
        return "n/a" if v is None else f"{100 * v:.2f}"

    def num(v, fmt):
        return "n/a" if v is None else format(v, fmt)

    lines = ["| arm | test error % (mean +- std) | per-seed test error % | train time s (mean) | img/s (mean) |",
             "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['arm']} | {pct(r['test_error_mean'])} +- {pct(r['test_error_std'])} | "
                     f"{', '.join(pct(e) for e in r['test_errors'])} | {num(r['train_s_mean'], '.0f')} | "
                     f"{num(r['images_per_s_mean'], '.0f')} |")
    return "\n".join(lines) + "\n"


def plot(path: Path, rows: list[dict], title: str) -> None:
    """Bar plot of the mean test error per arm (std error bars, one dot per seed), written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.3 * len(rows) + 2.5, 4))
    xs = range(len(rows))
    means = [100 * r["test_error_mean"] for r in rows]
    stds = [100 * (r["test_error_std"] or 0.0) for r in rows]
    ax.bar(xs, means, yerr=stds, capsize=4, color="tab:blue", alpha=0.7)
    for x, r in zip(xs, rows):
        ax.plot([x] * len(r["test_errors"]), [100 * e for e in r["test_errors"]], "k.", ms=5)
    lo = min(100 * min(r["test_errors"]) for r in rows)
    hi = max(100 * max(r["test_errors"]) for r in rows)
    pad = max(0.5, 0.15 * (hi - lo))
    ax.set_ylim(max(0.0, lo - 3 * pad), hi + pad)
    ax.set_xticks(list(xs), [r["arm"] for r in rows], rotation=20, ha="right")
    ax.set(ylabel="test error (%)", title=title)
    fig.tight_layout()
    atomic.save_figure(path, fig)


def compare(cfg: Config, arms: list[Arm] | str, seeds: int = 3, only_seed: int | None = None) -> dict:
    """Run every (arm, seed) pair not finished yet, then write compare.json / .md / .png; returns the summary.
    `only_seed` k: run only the pairs of seed k and write no table (to spread one comparison over several
    processes or machines; a call without it then reads every finished pair back and writes the table)."""
    if isinstance(arms, str):
        arms = parse_arms(arms)
    if not (isinstance(seeds, int) and seeds >= 1):
        raise ConfigError(f"--seeds must be an integer >= 1, got {seeds!r}")
    if only_seed is not None and not (isinstance(only_seed, int) and 0 <= only_seed < seeds):
        raise ConfigError(f"--only-seed must be one of 0..{seeds - 1} (the seeds --seeds {seeds} runs), "
                          f"got {only_seed!r}")
    out = Path(cfg.run.out_dir)
    dist = setup_distributed()
    try:
        with SIGNALS.installed():  # a stop signal: the pair in training stops with its checkpoint, no other starts
            return _compare(cfg, arms, seeds, only_seed, out, dist)
    finally:
        teardown(dist)


def _compare(cfg: Config, arms: list[Arm], seeds: int, only_seed: int | None, out: Path, dist) -> dict:
    log = RunLog(out, is_main=dist.is_main, progress=False)
    t0 = time.time()
    pairs = [(arm, k) for arm in arms for k in range(seeds) if only_seed in (None, k)]
    results: dict[tuple[str, int], dict] = {}
    agree = StopAgreement(dist.world)
    for i, (arm, k) in enumerate(pairs):
        signum = agree.now()
        if signum:
            raise StopRequested(signum, f"stopped by {signal_name(signum)} before the pair {arm.name} seed {k}; "
                                        f"the pairs before it are finished")
        pair_cfg = _pair_config(cfg, arm, k, out)
        done = finished_result(pair_cfg, arm)
        what = f"[{i + 1}/{len(pairs)}] {arm.name} seed {k} ({pair_cfg.run.out_dir})"
        if done is not None:
            log.info(f"compare {what}: finished before, test error {done['test_error']:.4f}")
            results[(arm.name, k)] = done
            continue
        log.info(f"compare {what}: training")
        results[(arm.name, k)] = train(pair_cfg, schedule=arm.schedule, augment=arm.augment)
    if only_seed is not None:
        log.info(f"compare: the {len(pairs)} run(s) of seed {only_seed} are finished; run without --only-seed "
                 f"for the table")
        return {"pairs": {f"{a}/seed{k}": r for (a, k), r in results.items()}}
    rows = summarise(arms, results, seeds)
    table = markdown_table(rows)
    if dist.is_main:
        with RunLock(out).held():  # the compare folder is locked only while its table is written (module docstring)
            device = pick_device(cfg.train, dist, lambda message: None)
            title = f"{cfg.model.name} on {cfg.data.dataset}, {cfg.train.epochs} epochs, {seeds} seed(s)"
            doc = {"format": "hba-fast-compare/1", "title": title, "config": cfg.to_dict(),
                   "arms": [dataclasses.asdict(a) for a in arms], "seeds": seeds, "summary": rows,
                   "pairs": [{"arm": a.name, "seed": k, **results[(a.name, k)]} for a, k in pairs],
                   "environment": environment(device), "wall_s_this_call": round(time.time() - t0, 1)}
            atomic.write_json(out / "compare.json", _finite(doc), indent=1)
            atomic.write_text(out / "compare.md", f"# {title}\n\n{table}")
            if all(math.isfinite(r["test_error_mean"]) for r in rows):
                plot(out / "compare.png", rows, title)
            print(table, end="", flush=True)
            log.info(f"compare: {len(pairs)} runs; table in {out / 'compare.md'}, plot in {out / 'compare.png'}")
    return {"summary": rows, "table": table}
