"""The JSON lines bench/gpu_suite.sh writes for its stages that are not benchmark scripts: env, tests, search.

Each subcommand prints one JSON object on stdout (the suite appends it to $OUT/results.jsonl), with the device,
versions and git sha, so every line says where it was measured. Target rows carry `metric`, `value`, `goal` and
`cmp` (the convention bench/summarize.py reads; the benchmark scripts write the same keys).

    python bench/suite_rows.py env [--smoke]
    python bench/suite_rows.py tests --junit pytest.xml --status RC [--smoke]
    python bench/suite_rows.py search --run RUN_DIR --wall SECONDS --status RC --epochs N [--smoke]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SEARCH_WALL_GOAL_S = 30.0  # issue 12: reduced CIFAR-10 search (WRN-40-2, 200 epochs) in <= 30 s wall


def git_sha() -> str:
    """HEAD of the checkout, or HBA_GIT_SHA on a copy without .git (a lent GPU machine)."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    except OSError:
        sha = ""
    return sha or os.environ.get("HBA_GIT_SHA", "") or "unknown"


def environment() -> dict:
    import torch

    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    try:
        import nvidia.dali

        dali = nvidia.dali.__version__
    except ImportError:
        dali = None
    gpu = torch.cuda.is_available()
    return {"device": torch.cuda.get_device_name() if gpu else "cpu", "torch": torch.__version__,
            "cuda": torch.version.cuda, "triton": triton_version, "dali": dali, "python": platform.python_version(),
            "cpus": os.cpu_count(), "git_sha": git_sha(), "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def tests_row(junit: Path, status: int) -> dict:
    """Counts from pytest's JUnit XML; `value` = failed + errors (goal 0)."""
    if not junit.is_file():
        return {"bench": "tests", "metric": "gpu_tests_failed", "value": None, "goal": 0, "cmp": "<=",
                "status": status, "note": f"no {junit.name}: pytest did not finish (exit {status})"}
    root = ET.parse(junit).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    failed = [f"{c.get('classname', '')}::{c.get('name', '')}" for c in suite.iter("testcase")
              if c.find("failure") is not None or c.find("error") is not None]
    return {"bench": "tests", "metric": "gpu_tests_failed", "value": counts["failures"] + counts["errors"], "goal": 0,
            "cmp": "<=", "status": status, "passed": counts["tests"] - counts["failures"] - counts["errors"]
            - counts["skipped"], **counts, "failed_tests": failed[:20]}


def search_row(run: Path, wall: float, status: int, epochs: int) -> dict:
    """Wall time of a finished search (its final row present), its test error, how far it got otherwise."""
    rows = []
    metrics = run / "metrics.jsonl"
    if metrics.is_file():
        rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    done = sum(r.get("kind") == "epoch" for r in rows)
    final = next((r for r in rows if r.get("kind") == "final"), None)
    finished = status == 0 and final is not None
    row = {"bench": "search", "metric": "search_wall_s", "variant": "reduced CIFAR-10",
           "value": round(wall, 1) if finished else None, "goal": SEARCH_WALL_GOAL_S, "cmp": "<=",
           "wall_s": round(wall, 1), "status": status, "epochs": epochs, "epochs_done": done,
           "test_error": None if final is None else final.get("test_error")}
    if not finished:
        row["note"] = f"not finished (exit {status}): {done}/{epochs} epochs in {wall:.0f} s"
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("what", choices=("env", "tests", "search"))
    ap.add_argument("--smoke", action="store_true", help="mark the row as a smoke run (code paths, no measurement)")
    ap.add_argument("--junit", type=Path)
    ap.add_argument("--run", type=Path)
    ap.add_argument("--wall", type=float)
    ap.add_argument("--status", type=int, default=0)
    ap.add_argument("--epochs", type=int)
    args = ap.parse_args(argv)
    if args.what == "env":
        row = {"bench": "env"}
    elif args.what == "tests":
        row = tests_row(args.junit, args.status)
    else:
        row = search_row(args.run, args.wall, args.status, args.epochs)
    row.update(environment())
    if args.smoke:
        row["smoke"] = True
    print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
