"""The reduced Table 6 (docs/results/stn-table6-cpu.sh) from its finished runs: validation loss, test loss and test
error per method, mean and sample std over seeds, and wall time; the hyperparameter trajectories of the searches.

    PYTHONPATH=$PWD python bench/stn_table6.py RUNS --md docs/results/stn-table6-cpu.md \
        --json docs/results/stn-table6-cpu.json --figures docs/results

RUNS holds hba/seed<k> and stn/seed<k> (search run folders: the `final` row of metrics.jsonl), fixed/seed<k>/fixed
and random/seed<k> (`hba-fast tune`: result.json, random-search.json). Training time: from a run's first metrics
row to its last epoch row (`train_s`; a random search's is the sum over its trials and its retrained best; run
start-up and the final evaluation are not counted). A run that has not finished is left out and counted.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hba_fast import atomic  # noqa: E402
from hba_fast.schedule.trajectory import plot_trajectory, read_trajectory  # noqa: E402

METHODS = ("hba", "stn", "random", "fixed", "hba-frozen", "hba-values")
LABELS = {"hba": "HBA (conv)", "stn": "STN (its method, all layers)", "random": "random search (4 x 4 epochs + best)",
          "fixed": "fixed STN initial values", "hba-frozen": "diagnostic: HBA, lambda frozen (hyper_lr 0)",
          "hba-values": "diagnostic: plain net at HBA's final values"}


def _rows(folder: Path) -> list[dict]:
    metrics = folder / "metrics.jsonl"
    return [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()] if metrics.exists() else []


def train_s(folder: Path) -> float:
    """Training time of a run: from its first metrics row to its last epoch row (metrics.jsonl keeps the rows of
    the training itself when a finished run is started again, unlike the final row's wall time)."""
    rows = _rows(folder)
    return max(r["time"] for r in rows if r["kind"] == "epoch") - min(r["time"] for r in rows)


def result(runs: Path, method: str, seed_dir: Path) -> dict | None:
    if method in ("hba", "stn", "hba-frozen"):
        final = [r for r in _rows(seed_dir) if r.get("kind") == "final"]
        return {**final[-1], "train_s": train_s(seed_dir)} if final else None
    if method in ("fixed", "hba-values"):
        folder = seed_dir / method.split("-")[-1]
        f = folder / "result.json"
        return {**json.loads(f.read_text()), "train_s": train_s(folder)} if f.exists() else None
    f = seed_dir / "random-search.json"
    if not f.exists():
        return None
    doc = json.loads(f.read_text())
    folders = [seed_dir / "random" / f"trial{k}" for k in range(len(doc["trials"]))] + [seed_dir / "random" / "best"]
    return {**doc["best"], "train_s": sum(train_s(d) for d in folders), "best_trial": doc["best_trial"]}


def _stat(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else None,
            "values": values}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", type=Path)
    ap.add_argument("--md", type=Path)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--figures", type=Path)
    ap.add_argument("--prefix", default="stn-table6-cpu", help="file name prefix of the figures")
    args = ap.parse_args()
    table = {}
    for method in METHODS:
        seeds = sorted((args.runs / method).glob("seed*")) if (args.runs / method).exists() else []
        done = {s.name: r for s in seeds if (r := result(args.runs, method, s)) is not None}
        if not done:
            continue
        row = {"seeds": sorted(done), "unfinished": len(seeds) - len(done)}
        for key in ("val_loss", "test_loss", "test_error", "train_s"):
            row[key] = _stat([done[s][key] for s in sorted(done)])
        table[method] = row
        if args.figures and method in ("hba", "stn"):
            for s in sorted(done):
                path = args.runs / method / s / "schedule.json"
                plot_trajectory(args.figures / f"{args.prefix}-{method}-{s}.png", read_trajectory(path),
                                title=f"{LABELS[method]}, {s}: hyperparameters per epoch")
    if args.json:
        atomic.write_json(args.json, table)

    def cell(stat: dict, fmt: str, scale: float = 1.0) -> str:
        mean = format(stat["mean"] * scale, fmt)
        return mean if stat["std"] is None else f"{mean} ± {format(stat['std'] * scale, fmt)}"

    def unfinished(row: dict) -> str:
        return f" ({row['unfinished']} unfinished)" if row["unfinished"] else ""

    lines = ["| method | val loss | test loss | test error (%) | training time (s) | seeds |",
             "|---|---|---|---|---|---|"]
    for method, row in table.items():
        lines.append(f"| {LABELS[method]} | {cell(row['val_loss'], '.3f')} | {cell(row['test_loss'], '.3f')} | "
                     f"{cell(row['test_error'], '.2f', 100)} | {cell(row['train_s'], '.0f')} | {len(row['seeds'])}"
                     f"{unfinished(row)} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.md:
        atomic.write_text(args.md, text)


if __name__ == "__main__":
    main()
