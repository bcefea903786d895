"""One process per run folder (hba_fast/run/lock.py): a second process on a folder in use exits at once with one line
naming the holder's pid and host and touches nothing; a holder killed with SIGKILL leaves no stale lock; a start that
fails removes the lock file it made; `hba-fast compare --only-seed K` processes share one compare folder (the pairs'
folders are locked, the compare folder only while its table is written)."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from hba_fast.cli import main
from hba_fast.errors import RunFolderError

LOCK_NAME = ".hba-fast.lock"  # hba_fast.run.lock.LOCK_NAME (test_lock_in_process checks they agree)

ROOT = Path(__file__).resolve().parents[1]
TINY = ["model.name=wrn-16-2", "data.num_train=64", "data.num_val=32", "data.num_test=32", "data.batch_size=16",
        "train.epochs=1", "train.steps_per_epoch=2", "run.progress=false", "run.num_threads=1"]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _sets(items):
    return [x for item in items for x in ("--set", item)]


def _snapshot(folder: Path) -> dict:
    """Every file's name, size and modification time: what "touches nothing" compares."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


def _holder(folder: Path) -> subprocess.Popen:
    """Another process that holds the folder's lock (and writes nothing else), until it is killed."""
    script = textwrap.dedent(f"""
        import time
        from hba_fast.run.lock import RunLock
        RunLock({str(folder)!r}).acquire()
        print("held", flush=True)
        time.sleep(600)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], env=ENV, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def _search(out: Path, *extra: str) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "hba_fast.cli", "search", *_sets(TINY + list(extra) + [f"run.out_dir={out}"])]
    return subprocess.run(argv, env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_a_second_process_is_refused_and_touches_nothing_then_sigkill_leaves_no_stale_lock(tmp_path):
    run = tmp_path / "run"
    assert _search(run).returncode == 0  # a finished run: its files, its checkpoint
    holder = _holder(run)
    try:
        before = _snapshot(run)
        t0 = time.monotonic()
        second = _search(run, "train.epochs=2")  # a requeued job extending it
        assert time.monotonic() - t0 < 60
        assert second.returncode == 2, second.stdout[-2000:] + second.stderr[-2000:]
        lines = [line for line in second.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("hba-fast: error: "), second.stderr
        assert f"pid {holder.pid} on host {socket.gethostname()}" in lines[0] and str(run) in lines[0]
        assert second.stdout == ""  # not a line of a start
        assert _snapshot(run) == before  # nothing written, nothing removed, not even the log
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    extended = _search(run, "train.epochs=2")  # the OS released the killed holder's lock: no stale lock
    assert extended.returncode == 0, extended.stdout[-2000:] + extended.stderr[-2000:]
    assert "resumed from" in extended.stdout


@pytest.mark.slow
def test_two_searches_on_one_folder(tmp_path):
    """Two real searches started on one folder: one trains, the other stops at once naming the first's pid."""
    run = tmp_path / "run"
    argv = [sys.executable, "-m", "hba_fast.cli", "search", *_sets(TINY + ["train.epochs=30", f"run.out_dir={run}"])]
    first = subprocess.Popen(argv, env=ENV, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while "training epoch" not in ((run / "log.txt").read_text() if (run / "log.txt").exists() else ""):
            assert time.monotonic() < deadline and first.poll() is None, "the first search did not start training"
            time.sleep(0.2)
        second = subprocess.run(argv, env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert second.returncode == 2 and f"pid {first.pid} on host" in second.stderr, second.stderr
        assert (run / LOCK_NAME).read_text().startswith(f"pid {first.pid} ")
    finally:
        first.send_signal(signal.SIGTERM)  # a graceful stop: it writes its checkpoint and exits with 143
        out, err = first.communicate(timeout=300)
    assert first.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert (run / "checkpoint.pt").exists()


def test_lock_in_process(tmp_path):
    """The same process's second RunLock is refused too (flock locks belong to the open file); release frees it;
    a lock file unlinked under a holder is not taken over through a stale descriptor."""
    from hba_fast.run import lock

    RunLock = lock.RunLock
    assert lock.LOCK_NAME == LOCK_NAME
    a = RunLock(tmp_path / "f")
    assert a.acquire() is None
    with pytest.raises(RunFolderError, match=f"pid {os.getpid()} on host"):
        RunLock(tmp_path / "f").acquire()
    a.release()
    b = RunLock(tmp_path / "f")
    b.acquire()
    (tmp_path / "f" / LOCK_NAME).unlink()  # a failed start's clean-up while b holds it
    c = RunLock(tmp_path / "f")
    c.acquire()  # a new file: c holds it, and b's descriptor no longer names the folder's lock
    with pytest.raises(RunFolderError):
        RunLock(tmp_path / "f").acquire()
    b.release()
    c.release()


def test_a_failed_start_removes_the_lock_file_it_made(tmp_path, capsys):
    out = tmp_path / "new"
    code = main(["search", *_sets(TINY + ["data.dataset=npz", f"data.path={tmp_path / 'missing.npz'}",
                                          f"run.out_dir={out}"])])
    assert code == 2 and "missing.npz" in capsys.readouterr().err
    assert not out.exists()  # nothing left behind, the lock file neither


@pytest.mark.slow
def test_two_only_seed_processes_share_one_compare_folder(tmp_path):
    """`hba-fast compare --only-seed 0` and `--only-seed 1` at the same time on one compare folder: both finish;
    then the call without --only-seed reads every pair back and writes the table."""
    cfg = str(ROOT / "configs" / "demo.yaml")
    out = tmp_path / "cmp"

    def argv(*extra):
        return [sys.executable, "-m", "hba_fast.cli", "compare", cfg, "--arms", "baseline,cutout", "--seeds", "2",
                *extra, *_sets(TINY + [f"run.out_dir={out}"])]

    procs = [subprocess.Popen(argv("--only-seed", str(k)), env=ENV, cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for k in (0, 1)]
    results = [p.communicate(timeout=900) for p in procs]
    for p, (stdout, stderr) in zip(procs, results):
        assert p.returncode == 0, stdout[-2000:] + stderr[-2000:]
    for arm in ("baseline", "cutout"):
        for k in (0, 1):
            assert (out / arm / f"seed{k}" / "result.json").exists()
    table = subprocess.run(argv(), env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert table.returncode == 0, table.stdout[-2000:] + table.stderr[-2000:]
    assert "finished before" in table.stdout and (out / "compare.md").exists()
    assert "training" not in " ".join(line for line in table.stdout.splitlines() if "compare [" in line)
