"""Run `hba-fast ARGS...` in this process with one fault injected, for tests/test_faults.py.

HBA_FAULT="<where>:<file>:<n>" kills this process with SIGKILL (no cleanup, no atexit: as `kill -9` does):
    write:<file>:n     in the middle of the n-th whole-file write of <file> (half of its bytes are in the temp file)
    fsync:<file>:n     after the n-th whole-file write of <file>, before its fsync
    replace:<file>:n   right after the n-th temp file was renamed over <file> (the new file is in place)
    append:<file>:n    right after the n-th line was appended to <file> (metrics.jsonl, log.txt)
    enospc:<file>:n    not a kill: the n-th write of <file> fails with ENOSPC, as on a full disk
The faults sit in `os.open` / `os.write` / `os.fsync` / `os.replace`, the calls hba_fast/atomic.py makes, so the
production code runs unchanged. Without HBA_FAULT this is plain `hba-fast ARGS...`.

Signals, as a cluster sends them (the process's own handlers then act, as they would on `kill -TERM <pid>`):
    HBA_SIGNAL="<SIG>:<k>[:<rank>]"   this process sends itself SIG (TERM, INT, USR1) right after its k-th training
                                      round (on that rank only: torchrun sets RANK); a Trainer hook, the only place
                                      with a round count
    HBA_SIGNAL_AGAIN="<SIG>:<file>"   after that: in the middle of the next whole-file write of <file> (half its bytes
                                      in the temp file), wait past the repeat window and send SIG again
"""
from __future__ import annotations

import errno
import os
import signal
import sys
from pathlib import Path


def make_faults(spec: str) -> dict:
    """{"open", "write", "fsync", "replace"}: replacements for those `os` functions that inject the fault."""
    where, name, n = spec.split(":")
    n = int(n)
    real_open, real_write, real_fsync, real_replace = os.open, os.write, os.fsync, os.replace
    doomed: set[int] = set()
    count = {"n": 0}

    def die():
        sys.stdout.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    def is_temp(path) -> bool:
        p = Path(path).name
        return p.startswith(name + ".hba") and p.endswith(".tmp")

    def fault_open(path, flags, mode=0o777, *args, **kwargs):
        fd = real_open(path, flags, mode, *args, **kwargs)
        doomed.discard(fd)
        whole = where in ("write", "fsync", "enospc") and is_temp(path)
        line = where in ("append", "enospc") and Path(path).name == name and flags & os.O_APPEND
        if whole or line:
            count["n"] += 1
            if count["n"] == n:
                doomed.add(fd)
        return fd

    def fault_write(fd, data):
        if fd in doomed:
            if where == "enospc":
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            if where == "write":
                real_write(fd, bytes(data)[: len(data) // 2])
                die()
            if where == "append":
                written = real_write(fd, data)
                die()
                return written
        return real_write(fd, data)

    def fault_fsync(fd):
        if fd in doomed and where == "fsync":
            die()
        return real_fsync(fd)

    def fault_replace(src, dst, *args, **kwargs):
        result = real_replace(src, dst, *args, **kwargs)
        if where == "replace" and Path(dst).name == name:
            count["n"] += 1
            if count["n"] == n:
                die()
        return result

    return {"open": fault_open, "write": fault_write, "fsync": fault_fsync, "replace": fault_replace}


def install(spec: str) -> None:
    for attr, fn in make_faults(spec).items():
        setattr(os, attr, fn)


def install_signal(spec: str, again: str | None) -> None:
    """HBA_SIGNAL / HBA_SIGNAL_AGAIN (module docstring)."""
    import time

    from hba_fast.engine.trainer import Trainer

    sig, k, *rank = spec.split(":")
    signum, k = getattr(signal, "SIG" + sig), int(k)
    if rank and int(os.environ.get("RANK", "0")) != int(rank[0]):
        return
    run_round, count = Trainer.run_round, {"n": 0}

    def counted(self, n_weight, n_hyper):
        run_round(self, n_weight, n_hyper)
        count["n"] += 1
        if count["n"] == k:
            os.kill(os.getpid(), signum)

    Trainer.run_round = counted
    if not again:
        return
    from hba_fast.run.stop import REPEAT_WINDOW_S

    sig2, name = again.split(":")
    real_open, real_write = os.open, os.write
    doomed: set[int] = set()

    def open_(path, flags, mode=0o777, *args, **kwargs):
        fd = real_open(path, flags, mode, *args, **kwargs)
        doomed.discard(fd)
        p = Path(path).name
        if count["n"] >= k and p.startswith(name + ".hba") and p.endswith(".tmp"):
            doomed.add(fd)
        return fd

    def write(fd, data):
        if fd not in doomed:
            return real_write(fd, data)
        doomed.discard(fd)
        written = real_write(fd, bytes(data)[: len(data) // 2])
        time.sleep(REPEAT_WINDOW_S + 0.5)  # a second signal, not the first one delivered twice
        os.kill(os.getpid(), getattr(signal, "SIG" + sig2))
        time.sleep(5)  # the handler exits at the next bytecode; this is never reached in time
        return written

    os.open, os.write = open_, write


if __name__ == "__main__":
    if os.environ.get("HBA_FAULT"):
        install(os.environ["HBA_FAULT"])
    if os.environ.get("HBA_SIGNAL"):
        install_signal(os.environ["HBA_SIGNAL"], os.environ.get("HBA_SIGNAL_AGAIN"))
    from hba_fast.cli import main

    sys.exit(main(sys.argv[1:]))
