"""One table of issue 12's targets from a bench/gpu_suite.sh output folder: measured value, goal, pass / FAIL /
not measured, plus the search's test error, the GPU tests and the stages that failed.

The targets and their goals are bench/targets.py's table (the goal a row carries is not read). Reads
OUT/results.jsonl (rows with `metric`, `value`, optionally `variant`: written by bench_pipeline.py, bench_kernels.py
and suite_rows.py; bench_kernels.py's per-shape `hyper_bn` rows) and OUT/round.jsonl (bench_round.py: one row per
(strategy, mode) with its `train_images_per_s`). Formed here:
  search round / plain step per training image = images/s of strategy none / images/s of the strategy, same mode;
  graphs vs eager = images/s with graphs / images/s eager, same strategy;
  hyper-BN / native BN = geomean over the BN shapes of fused ms / native_bn ms, per net and mode.
Every expected target is listed; one that no row measured says "not measured". Rows marked "smoke" (the CPU
smoke run) check code paths only: the table then says so in its title and judges nothing.

    python bench/summarize.py $OUT [--failed "round search"]
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/: targets.py

from targets import TARGETS  # the one table of issue 12's targets (bench/targets.py)

IPS_KEY = "train_images_per_s"  # bench_round.py's training images/s per (strategy, mode)


def read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut by a time limit
    return rows


def round_metrics(rows: list[dict]) -> list[dict]:
    """Target rows formed from bench_round.py's per-(strategy, mode) images/s (the last row of each pair wins)."""
    ips, smoke = {}, False
    for r in rows:
        value = r.get(IPS_KEY)
        if isinstance(value, (int, float)) and value > 0 and None not in (r.get("strategy"), r.get("mode")):
            ips[(r["strategy"], r["mode"])] = value
            smoke = smoke or bool(r.get("smoke"))
    out = []
    for (strategy, mode), v in ips.items():
        if strategy != "none" and ("none", mode) in ips:
            out.append({"metric": "round_ratio", "variant": f"{strategy} {mode}", "value": ips[("none", mode)] / v,
                        "smoke": smoke})
        if mode == "graphs" and (strategy, "eager") in ips:
            out.append({"metric": "graphs_speedup", "variant": strategy, "value": v / ips[(strategy, "eager")],
                        "smoke": smoke})
    return out


def bn_metrics(rows: list[dict]) -> list[dict]:
    """hyper-BN / native BN per (net, mode): the geomean over BN shapes of bench_kernels.py's `hyper_bn` rows
    (impl fused and native_bn, ms each; the last row of a shape wins)."""
    ms, smoke = {}, False
    for r in rows:
        if r.get("bench") == "hyper_bn" and isinstance(r.get("ms"), (int, float)) and r["ms"] > 0:
            ms[(r.get("net"), r.get("mode"), r.get("c"), r.get("h"), r.get("impl"))] = r["ms"]
            smoke = smoke or bool(r.get("smoke"))
    ratios: dict[tuple, list[float]] = {}
    for (net, mode, c, h, impl), t in ms.items():
        native = ms.get((net, mode, c, h, "native_bn"))
        if impl == "fused" and native:
            ratios.setdefault((net, mode), []).append(t / native)
    return [{"metric": "kernel_bn_over_native", "variant": f"{net} {mode}", "smoke": smoke,
             "value": math.exp(sum(map(math.log, v)) / len(v)), "note": f"geomean of {len(v)} BN shapes"}
            for (net, mode), v in ratios.items()]


def judge(value, goal, cmp: str) -> str:
    if value is None:
        return "not measured"
    return "pass" if (value <= goal if cmp == "<=" else value >= goal) else "FAIL"


def fmt(value) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def target_rows(out_dir: Path) -> tuple[dict, bool, list[dict]]:
    """(env row, smoke run?, one dict per target: label, value, goal, cmp, status, note, row) from OUT's files."""
    results = read_jsonl(out_dir / "results.jsonl")
    rows = ([r for r in results if "metric" in r] + round_metrics(read_jsonl(out_dir / "round.jsonl"))
            + bn_metrics(results))
    env = next((r for r in results if r.get("bench") == "env"), {})
    smoke = any(r.get("smoke") for r in results + rows)
    measured = {(r["metric"], r.get("variant")): r for r in rows}  # the last row of a metric and variant wins
    table = []
    for metric, variant, label, goal, cmp in TARGETS:  # judged by the table's goal, whatever a row says
        row = measured.get((metric, variant))
        value = None if row is None else row.get("value")
        status = "smoke" if smoke and value is not None else judge(value, goal, cmp)
        note = "" if row is None else row.get("note", "")
        if metric == "gpu_tests_failed" and row is not None and row.get("tests") is not None:
            note = f"{row.get('passed')} passed, {row.get('skipped')} skipped of {row.get('tests')}"
            if row.get("status") and status == "pass":  # pytest cut by the time limit (SIGINT) or crashed
                status, note = "FAIL", f"{note}; pytest exit {row['status']}, not every test ran"
        table.append({"metric": metric, "variant": variant, "label": label, "value": value, "goal": goal, "cmp": cmp,
                      "status": status, "note": note, "row": row})
    return env, smoke, table


def summarize(out_dir: Path, failed_stages: list[str]) -> str:
    env, smoke, table = target_rows(out_dir)
    lines = [f"gpu_suite summary: {env.get('device', '?')}, torch {env.get('torch', '?')}, triton "
             f"{env.get('triton', '?')}, sha {str(env.get('git_sha', '?'))[:12]}, {env.get('time', '?')}"]
    if smoke:
        lines.append("SMOKE RUN (CPU, tiny sizes): the values check the code paths and measure nothing; no target "
                     "is judged")
    width = max(len(t["label"]) for t in table) + 2
    lines.append(f"{'target':<{width}} {'measured':>10} {'goal':>9}  status")
    for t in table:
        lines.append(f"{t['label']:<{width}} {fmt(t['value']):>10} {t['cmp']} {t['goal']:<6}  {t['status']}"
                     + (f"  ({t['note']})" if t["note"] else ""))
        if t["metric"] == "search_wall_s" and t["row"] is not None:
            r = t["row"]
            lines.append(f"{'  its test error (theta(lambda*) on the rebuilt test set)':<{width}} "
                         f"{fmt(r.get('test_error')):>10}  ({r.get('epochs_done')}/{r.get('epochs')} epochs, "
                         f"{fmt(r.get('wall_s'))} s)")
    lines.append(f"stages failed: {', '.join(failed_stages) if failed_stages else 'none'}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--failed", default="", help="names of the stages that failed, space-separated")
    args = ap.parse_args(argv)
    print(summarize(args.out_dir, args.failed.split()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
