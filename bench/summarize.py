"""One table of issue 12's targets from a bench/gpu_suite.sh output folder: measured value, goal, pass / FAIL /
not measured, plus the search's test error, the GPU tests and the stages that failed.

Reads OUT/results.jsonl (rows with `metric`, `value`, `goal`, `cmp`, optionally `variant`: written by
bench_pipeline.py, bench_kernels.py and suite_rows.py) and OUT/round.jsonl (bench_round.py: one row per
(strategy, mode) with its training images/s; the ratios are formed here:
  search round / plain step per training image = images/s of strategy none / images/s of the strategy, same mode;
  graphs vs eager = images/s with graphs / images/s eager, same strategy).
Every expected target is listed; one that no row measured says "not measured". Rows marked "smoke" (the CPU
smoke run) check code paths only: the table then says so in its title and judges nothing.

    python bench/summarize.py $OUT [--failed "round search"]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

# (metric, variant, label, goal, cmp): the targets of issue 12, in the order printed.
TARGETS = [
    ("policy_share", "static", "policy / WRN-40-2 step, b128 [static, eager]", 0.05, "<="),
    ("policy_share", "static graph", "policy / WRN-40-2 step, b128 [static, CUDA graph]", 0.05, "<="),
    ("policy_share", "static torch", "policy / WRN-40-2 step, b128 [static, torch ops]", 0.05, "<="),
    ("policy_share", "indexed", "policy / WRN-40-2 step, b128 [indexed]", 0.05, "<="),
    *[("round_ratio", f"{s} {m}", f"search round / plain step per image [{s}, {m}]", goal, "<=")
      for s, goal in (("first_bn", 1.35), ("conv+bn", 1.8)) for m in ("eager", "graphs", "compile")],
    *[("graphs_speedup", s, f"graphs vs eager, WRN-40-2 b128 [{s}]", 1.3, ">=")
      for s in ("none", "first_bn", "conv+bn")],
    ("search_wall_s", "reduced CIFAR-10", "reduced CIFAR-10 search, wall s [WRN-40-2, 200 epochs]", 30.0, "<="),
    *[(metric, f"{net} {mode}", f"{label} [{net} {mode}]", goal, cmp)
      for net in ("wrn-40-2", "wrn-28-10") for mode in ("fwd", "fwdbwd")
      for metric, label, goal, cmp in (("kernel_speedup_vs_two_conv", "hyper-conv speed-up vs two convs", 1.5, ">="),
                                       ("kernel_fused_over_cudnn", "hyper-conv / cuDNN 2*Cout conv", 1.15, "<="))],
    ("gpu_tests_failed", None, "GPU tests failed (pytest -m gpu)", 0, "<="),
]
IPS_KEYS = ("images_per_s", "train_images_per_s", "img_per_s", "imgs_per_s")


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
        value = next((r[k] for k in IPS_KEYS if isinstance(r.get(k), (int, float))), None)
        if value and r.get("strategy") is not None and r.get("mode") is not None:
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
    rows = [r for r in results if "metric" in r] + round_metrics(read_jsonl(out_dir / "round.jsonl"))
    env = next((r for r in results if r.get("bench") == "env"), {})
    smoke = any(r.get("smoke") for r in results + rows)
    measured = {(r["metric"], r.get("variant")): r for r in rows}  # the last row of a metric and variant wins
    table = []
    for metric, variant, label, goal, cmp in TARGETS:
        row = measured.get((metric, variant))
        value = None if row is None else row.get("value")
        status = "smoke" if smoke and value is not None else judge(value, goal, cmp)
        note = "" if row is None else row.get("note", "")
        if metric == "gpu_tests_failed" and row is not None and row.get("tests") is not None:
            note = f"{row.get('passed')} passed, {row.get('skipped')} skipped of {row.get('tests')}"
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
