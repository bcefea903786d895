"""A study's table from its finished runs, kept in a JSON file that grows as runs finish (and survives the runs).

    PYTHONPATH=$PWD python bench/study_table.py RUNS_FOLDER --json docs/results/fidelity-1k-runs.json \
        [--md docs/results/fidelity-1k-table.md] [--order baseline,cutout,...]

RUNS_FOLDER holds `hba-fast compare` pairs (<arm>/seed<k>/result.json, the layout `compare` and `compare
--only-seed` write). For every finished pair not in the JSON yet, the row records the test error and loss of its
result.json, the clean training error of its model.pt on the training split its config.yaml names (one pass, no
augmentation: how far the model fits the images it trained on), its training time, and where it ran (git sha,
host, torch, threads from environment.json). Rows already in the JSON are kept as they are (also when their run
folder is gone: the JSON is the study's record, the run folders are not). Then per arm: the mean and sample std of
the test error over its seeds, every seed's error, the mean clean training error; written to the JSON (atomically)
and, with --md, as a markdown table.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from train_test_gap import run_train_error  # noqa: E402

from hba_fast import atomic  # noqa: E402


def run_row(run: Path, splits_cache: dict) -> dict:
    result = json.loads((run / "result.json").read_text())
    raw = yaml.safe_load((run / "config.yaml").read_text())
    env = json.loads((run / "environment.json").read_text()) if (run / "environment.json").exists() else {}
    return {"arm": run.parent.name, "seed": int(run.name.removeprefix("seed")),
            "test_error": result["test_error"], "test_loss": result.get("test_loss"),
            "train_error": round(run_train_error(run, splits_cache), 4),
            "train_s": result.get("train_s"), "epochs": result.get("epochs"), "evaluate": raw.get("evaluate"),
            "git_sha": env.get("git_sha"), "host": env.get("hostname"), "torch": env.get("torch"),
            "cpu_threads": env.get("cpu_threads")}


def summary(rows: list[dict], order: list[str]) -> list[dict]:
    arms = sorted({r["arm"] for r in rows}, key=lambda a: (order.index(a) if a in order else len(order), a))
    out = []
    for arm in arms:
        rs = sorted((r for r in rows if r["arm"] == arm), key=lambda r: r["seed"])
        errors = [r["test_error"] for r in rs]
        out.append({"arm": arm, "seeds": [r["seed"] for r in rs], "test_errors": errors,
                    "test_error_mean": statistics.fmean(errors),
                    "test_error_std": statistics.stdev(errors) if len(errors) > 1 else None,
                    "train_error_mean": statistics.fmean(r["train_error"] for r in rs)})
    return out


def markdown(rows: list[dict]) -> str:
    pct = lambda v: "n/a" if v is None else f"{100 * v:.2f}"  # noqa: E731
    lines = ["| arm | seeds | test error % (mean +- std) | per-seed test error % | clean train error % |",
             "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['arm']} | {len(r['seeds'])} | {pct(r['test_error_mean'])} +- {pct(r['test_error_std'])} | "
                     f"{', '.join(pct(e) for e in r['test_errors'])} | {pct(r['train_error_mean'])} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("folder", help="a compare folder (<arm>/seed<k>/ runs)")
    p.add_argument("--json", required=True, help="the study's record: read, extended, written back")
    p.add_argument("--md", default=None, help="also write the table as markdown")
    p.add_argument("--order", default="", help="comma-separated arm names: the table's row order")
    args = p.parse_args()
    torch.set_num_threads(1)
    out = Path(args.json)
    doc = json.loads(out.read_text()) if out.exists() else {"runs": []}
    have = {(r["arm"], r["seed"]) for r in doc["runs"]}
    splits_cache: dict = {}
    for result in sorted(Path(args.folder).glob("*/seed*/result.json")):
        run = result.parent
        if (run.parent.name, int(run.name.removeprefix("seed"))) in have:
            continue
        row = run_row(run, splits_cache)
        doc["runs"].append(row)
        print(json.dumps(row), flush=True)
    doc["runs"].sort(key=lambda r: (r["arm"], r["seed"]))
    doc["summary"] = summary(doc["runs"], [a for a in args.order.split(",") if a])
    atomic.write_json(out, doc, indent=1)
    table = markdown(doc["summary"])
    print(table, end="")
    if args.md:
        atomic.write_text(args.md, table)


if __name__ == "__main__":
    main()
