"""bench/gpu_suite.sh cannot rot: its --smoke mode runs every stage at tiny sizes on the CPU, writes at most 8 files
under $OUT and prints the summary table last; the summary and the suite's own JSON lines are checked on made-up
inputs, so a wrong pass / FAIL cannot hide. No stage may fail in the smoke run."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import suite_rows  # noqa: E402
import summarize  # noqa: E402
import targets  # noqa: E402

MAX_FILES = 8  # what a lent GPU machine hands back from $OUT


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_summary_forms_ratios_and_judges(tmp_path):
    write_jsonl(tmp_path / "results.jsonl", [
        {"bench": "env", "device": "NVIDIA H200", "torch": "2.11.0", "triton": "3.6.0", "git_sha": "abc", "time": "t"},
        {"metric": "policy_share", "variant": "static graph", "value": 0.02, "goal": 0.05, "cmp": "<="},
        {"metric": "policy_share", "variant": "static", "value": 0.09, "goal": 0.05, "cmp": "<="},
        {"metric": "kernel_speedup_vs_two_conv", "variant": "wrn-40-2 fwd", "value": 1.7, "goal": 1.5, "cmp": ">="},
        # the table's goal (1.15) judges, not the row's
        {"metric": "kernel_fused_over_cudnn", "variant": "wrn-40-2 fwd", "value": 1.3, "goal": 2.0, "cmp": "<="},
        # hyper-BN / native: geomean of 1.0 and 1.44 = 1.2 (pass) for fwd; 1.5 (FAIL) for fwdbwd
        *[{"bench": "hyper_bn", "net": "wrn-40-2", "c": c, "h": 32, "mode": mode, "impl": impl, "ms": ms}
          for c, mode, impl, ms in ((16, "fwd", "fused", 1.0), (16, "fwd", "native_bn", 1.0),
                                    (32, "fwd", "fused", 1.44), (32, "fwd", "native_bn", 1.0),
                                    (16, "fwdbwd", "fused", 3.0), (16, "fwdbwd", "native_bn", 2.0))],
        {"metric": "search_wall_s", "variant": "reduced CIFAR-10", "value": None, "wall_s": 95.0, "epochs": 200,
         "epochs_done": 150, "test_error": None, "note": "not finished (exit 124): 150/200 epochs in 95 s"},
    ])
    write_jsonl(tmp_path / "round.jsonl", [
        {"strategy": "none", "mode": "eager", "train_images_per_s": 20000.0},
        {"strategy": "first_bn", "mode": "eager", "train_images_per_s": 16000.0},  # ratio 1.25: pass
        {"strategy": "conv+bn", "mode": "eager", "train_images_per_s": 10000.0},  # ratio 2.0: FAIL
        {"strategy": "first_bn", "mode": "graphs", "train_images_per_s": 24000.0},  # graphs vs eager 1.5: pass
    ])
    (tmp_path / "round.jsonl").open("a").write('{"strategy": "none", "mode": "gra')  # a line cut by a time limit
    env, smoke, table = summarize.target_rows(tmp_path)
    status = {t["label"]: t["status"] for t in table}
    value = {t["label"]: t["value"] for t in table}
    assert env["device"] == "NVIDIA H200" and not smoke
    assert status["policy / WRN-40-2 step, b128 [static, CUDA graph]"] == "pass"
    assert status["policy / WRN-40-2 step, b128 [static, eager]"] == "FAIL"
    assert status["policy / WRN-40-2 step, b128 [indexed]"] == "not measured"
    assert value["search round / plain step per image [first_bn, eager]"] == pytest.approx(1.25)
    assert status["search round / plain step per image [first_bn, eager]"] == "pass"
    assert status["search round / plain step per image [conv+bn, eager]"] == "FAIL"
    assert value["graphs vs eager, WRN-40-2 b128 [first_bn]"] == pytest.approx(1.5)
    assert status["graphs vs eager, WRN-40-2 b128 [first_bn]"] == "pass"
    assert status["graphs vs eager, WRN-40-2 b128 [none]"] == "not measured"
    assert status["hyper-conv speed-up vs two convs [wrn-40-2 fwd]"] == "pass"
    assert status["hyper-conv speed-up vs two convs [wrn-28-10 fwd]"] == "not measured"
    assert status["hyper-conv / cuDNN 2*Cout conv [wrn-40-2 fwd]"] == "FAIL"
    assert value["hyper-BN / native BN [wrn-40-2 fwd]"] == pytest.approx(1.2)
    assert status["hyper-BN / native BN [wrn-40-2 fwd]"] == "pass"
    assert status["hyper-BN / native BN [wrn-40-2 fwdbwd]"] == "FAIL"
    assert status["hyper-BN / native BN [wrn-28-10 fwd]"] == "not measured"
    text = summarize.summarize(tmp_path, ["kernels"])
    assert text.splitlines()[0].startswith("gpu_suite summary: NVIDIA H200, torch 2.11.0")
    assert "SMOKE" not in text and text.splitlines()[-1] == "stages failed: kernels"
    search = next(line for line in text.splitlines() if line.startswith("reduced CIFAR-10 search"))
    assert "not measured" in search and "150/200 epochs" in search


def test_one_table_of_goals():
    """The issue's goals, stated once (bench/targets.py): the summary judges by it and the scripts write it."""
    goals = {(t.metric, t.variant): t.goal for t in targets.TARGETS}
    assert summarize.TARGETS is targets.TARGETS
    assert goals[("round_ratio", "first_bn eager")] == 1.35 and goals[("round_ratio", "conv+bn graphs")] == 1.8
    assert goals[("graphs_speedup", "first_bn")] == 1.3 and goals[("search_wall_s", "reduced CIFAR-10")] == 30
    assert all(goals[("policy_share", f)] == 0.05 for f in ("static", "static graph", "static torch", "indexed"))
    assert goals[("kernel_speedup_vs_two_conv", "wrn-28-10 fwdbwd")] == 1.5
    assert goals[("kernel_fused_over_cudnn", "wrn-40-2 fwd")] == 1.15
    assert goals[("kernel_bn_over_native", "wrn-40-2 fwd")] == 1.2
    assert targets.goal("policy_share", "dali") == (0.05, "<=")
    assert targets.goal("search_wall_s") == (suite_rows.SEARCH_WALL_GOAL_S, "<=")  # suite_rows writes the same


def test_suite_rows_read_junit_and_the_search_folder(tmp_path):
    junit = tmp_path / "pytest.xml"
    junit.write_text('<testsuites><testsuite tests="5" failures="1" errors="0" skipped="2">'
                     '<testcase classname="tests.test_a" name="test_ok"/>'
                     '<testcase classname="tests.test_a" name="test_bad"><failure message="x"/></testcase>'
                     '</testsuite></testsuites>')
    row = suite_rows.tests_row(junit, 1)
    assert (row["value"], row["passed"], row["skipped"]) == (1, 2, 2)
    assert row["failed_tests"] == ["tests.test_a::test_bad"]
    assert suite_rows.tests_row(tmp_path / "missing.xml", 124)["value"] is None

    run = tmp_path / "run"
    run.mkdir()
    write_jsonl(run / "metrics.jsonl", [{"kind": "epoch", "epoch": 0}, {"kind": "epoch", "epoch": 1},
                                        {"kind": "final", "test_error": 0.25}])
    row = suite_rows.search_row(run, 12.34, 0, 2)
    assert (row["value"], row["test_error"], row["epochs_done"]) == (12.3, 0.25, 2)
    killed = suite_rows.search_row(run, 95.0, 124, 200)
    assert killed["value"] is None and "2/200 epochs" in killed["note"]


def test_tests_stage_covers_every_file_with_a_gpu_test():
    """The suite's tests stage lists exactly the test files holding a `gpu` test (a new one must be added there),
    and runs them all but the slow one."""
    script = (ROOT / "bench" / "gpu_suite.sh").read_text()
    body = script[script.index("stage_tests() {"):]
    listed = body[body.index("files=(") + len("files=("):body.index(")", body.index("files=("))].split()
    marked = re.compile(r"^\s*(@pytest\.mark\.gpu\b|pytestmark\b.*\bmark\.gpu\b)", re.M)
    with_gpu = {f"tests/{p.name}" for p in (ROOT / "tests").glob("test_*.py") if marked.search(p.read_text())}
    assert len(listed) == len(set(listed)) and set(listed) == with_gpu, sorted(set(listed) ^ with_gpu)
    assert '-m "gpu and not slow"' in body and " -x " not in body


def test_a_cut_pytest_is_not_a_pass(tmp_path):
    """pytest stopped at the stage's limit writes a pytest.xml with no failure: its exit status makes it FAIL."""
    write_jsonl(tmp_path / "results.jsonl", [
        {"bench": "tests", "metric": "gpu_tests_failed", "value": 0, "goal": 0, "cmp": "<=", "status": 124,
         "passed": 40, "skipped": 1, "tests": 41}])
    row = next(t for t in summarize.target_rows(tmp_path)[2] if t["metric"] == "gpu_tests_failed")
    assert row["status"] == "FAIL" and "exit 124" in row["note"]
    write_jsonl(tmp_path / "results.jsonl", [
        {"bench": "tests", "metric": "gpu_tests_failed", "value": 0, "goal": 0, "cmp": "<=", "status": 0,
         "passed": 40, "skipped": 1, "tests": 41}])
    assert next(t for t in summarize.target_rows(tmp_path)[2] if t["metric"] == "gpu_tests_failed")["status"] == "pass"


@pytest.mark.slow
def test_gpu_suite_smoke_runs_every_stage(tmp_path):
    out = tmp_path / "out"
    results_before = sorted((ROOT / "bench" / "results").glob("*"))
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(["bash", str(ROOT / "bench" / "gpu_suite.sh"), "--smoke"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=900)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-3000:]

    lines = done.stdout.rstrip().splitlines()
    assert lines[-1].startswith("stages failed:"), log[-3000:]  # the summary table is the last thing printed
    table = lines[next(i for i, line in enumerate(lines) if line.startswith("gpu_suite summary:")):]
    assert "SMOKE RUN" in table[1] and any(line.startswith("policy / WRN-40-2 step") for line in table)

    failed = {line.split()[2] for line in lines if line.startswith("STAGE FAILED:")}
    assert not failed, log[-3000:]

    files = sorted(p.name for p in out.rglob("*") if p.is_file())
    assert len(files) <= MAX_FILES, files
    expected = {"suite.log", "results.jsonl", "pytest.xml", "schedule.png", "search_metrics.jsonl", "round.jsonl"}
    assert expected <= set(files)
    assert "gpu_suite summary:" in (out / "suite.log").read_text()
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert all(r.get("smoke") for r in rows) and all(r.get("git_sha") for r in rows)
    by_bench = {r["bench"] for r in rows}
    assert {"env", "tests", "search", "hyper_conv", "hyper_conv_target", "pipeline", "soak"} <= by_bench
    soak = {r["metric"]: r for r in rows if r["bench"] == "soak"}
    assert soak["soak_fd_growth"]["value"] == 0 and soak["soak_rss_growth_mib"]["rounds"] == 60
    search = next(r for r in rows if r["bench"] == "search")
    assert search["status"] == 0 and search["epochs_done"] == 2 and 0.0 <= search["test_error"] <= 1.0
    assert {r["variant"] for r in rows if r.get("metric") == "policy_share"} >= {"static", "indexed"}
    assert sorted((ROOT / "bench" / "results").glob("*")) == results_before  # everything went to $OUT
