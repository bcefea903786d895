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
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from targets import goal  # noqa: E402

SEARCH_WALL_GOAL_S = goal("search_wall_s")[0]  # reduced CIFAR-10 search (WRN-40-2, 200 epochs), wall s


def environment() -> dict:
    """This script's environment keys, from the package's one helper (hba_fast.run.environment)."""
    sys.path.insert(0, str(ROOT))  # the checkout's hba_fast, installed or not
    from hba_fast.run.environment import environment as hba_environment

    env = hba_environment()
    return {"device": env.get("gpu") or "cpu", "torch": env["torch"], "cuda": env["cuda"], "triton": env["triton"],
            "dali": env["dali"], "python": env["python"], "cpus": env["cpus"], "git_sha": env["git_sha"] or "unknown",
            "git_dirty": env["git_dirty"], "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


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
