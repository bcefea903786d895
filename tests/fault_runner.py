"""Run `hba-fast ARGS...` in this process with one fault injected, for tests/test_faults.py.

HBA_FAULT="<where>:<file>:<n>" kills this process with SIGKILL (no cleanup, no atexit: as `kill -9` does):
    write:<file>:n     in the middle of the n-th whole-file write of <file> (half of its bytes are in the temp file)
    fsync:<file>:n     after the n-th whole-file write of <file>, before its fsync
    replace:<file>:n   right after the n-th temp file was renamed over <file> (the new file is in place)
    append:<file>:n    right after the n-th line was appended to <file> (metrics.jsonl, log.txt)
    enospc:<file>:n    not a kill: the n-th write of <file> fails with ENOSPC, as on a full disk
The faults sit in `os.open` / `os.write` / `os.fsync` / `os.replace`, the calls hba_fast/atomic.py makes, so the
production code runs unchanged. Without HBA_FAULT this is plain `hba-fast ARGS...`.
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


if __name__ == "__main__":
    if os.environ.get("HBA_FAULT"):
        install(os.environ["HBA_FAULT"])
    from hba_fast.cli import main

    sys.exit(main(sys.argv[1:]))
