"""bench/gpu_suite.sh cannot rot: its --smoke mode runs every stage at tiny sizes on the CPU, writes at most 8 files
under $OUT and prints the summary table last; the summary and the suite's own JSON lines are checked on made-up
inputs, so a wrong pass / FAIL cannot hide. No stage may fail in the smoke run."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import suite_rows  # noqa: E402
import summarize  # noqa: E402

MAX_FILES = 8  # what a lent GPU machine hands back from $OUT


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_summary_forms_ratios_and_judges(tmp_path):
    write_jsonl(tmp_path / "results.jsonl", [
        {"bench": "env", "device": "NVIDIA H200", "torch": "2.11.0", "triton": "3.6.0", "git_sha": "abc", "time": "t"},
        {"metric": "policy_share", "variant": "static graph", "value": 0.02, "goal": 0.05, "cmp": "<="},
        {"metric": "policy_share", "variant": "static", "value": 0.09, "goal": 0.05, "cmp": "<="},
        {"metric": "kernel_speedup_vs_two_conv", "variant": "wrn-40-2 fwd", "value": 1.7, "goal": 1.5, "cmp": ">="},
        {"metric": "search_wall_s", "variant": "reduced CIFAR-10", "value": None, "wall_s": 95.0, "epochs": 200,
         "epochs_done": 150, "test_error": None, "note": "not finished (exit 124): 150/200 epochs in 95 s"},
    ])
    write_jsonl(tmp_path / "round.jsonl", [
        {"strategy": "none", "mode": "eager", "images_per_s": 20000.0},
        {"strategy": "first_bn", "mode": "eager", "images_per_s": 16000.0},  # ratio 1.25: pass
        {"strategy": "conv+bn", "mode": "eager", "images_per_s": 10000.0},  # ratio 2.0: FAIL
        {"strategy": "first_bn", "mode": "graphs", "images_per_s": 24000.0},  # graphs vs eager 1.5: pass
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
    text = summarize.summarize(tmp_path, ["kernels"])
    assert text.splitlines()[0].startswith("gpu_suite summary: NVIDIA H200, torch 2.11.0")
    assert "SMOKE" not in text and text.splitlines()[-1] == "stages failed: kernels"
    search = next(line for line in text.splitlines() if line.startswith("reduced CIFAR-10 search"))
    assert "not measured" in search and "150/200 epochs" in search


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
    assert {"env", "tests", "search", "hyper_conv", "hyper_conv_target", "pipeline"} <= by_bench
    search = next(r for r in rows if r["bench"] == "search")
    assert search["status"] == 0 and search["epochs_done"] == 2 and 0.0 <= search["test_error"] <= 1.0
    assert {r["variant"] for r in rows if r.get("metric") == "policy_share"} >= {"static", "indexed"}
    assert sorted((ROOT / "bench" / "results").glob("*")) == results_before  # everything went to $OUT
