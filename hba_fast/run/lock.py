"""One process per run folder: an OS lock on `<folder>/.hba-fast.lock`, held for the whole run.

    RunLock(folder).acquire()   fcntl.flock(LOCK_EX | LOCK_NB) on the lock file (made if missing); the holder writes
                                "pid <pid> host <host>" into it. A second process on the same folder gets a
                                RunFolderError naming the holder's pid and host, before it reads or writes anything
                                else there (the lock file is opened, never changed, by the loser).
    release()                   closes the file: the lock goes with it. The OS also releases it when the process
                                dies in any way (SIGKILL, a crash, the machine's OOM killer), so no stale lock is left
                                to clean up; the file itself stays (a later run locks it again).

A start that fails before training removes the files it created, the lock file too (folder.py); a file unlinked while
locked can still be locked through an old descriptor, so `acquire` checks after locking that the path still names the
inode it locked, and tries again if not. flock works across machines on NFSv4 and on Lustre mounted with `flock`;
where the file system cannot lock (ENOLCK, EOPNOTSUPP) the run goes on unguarded and `acquire` returns a note saying
so. Under torchrun rank 0 holds the lock (`hold_run_folder`) and every rank hears the outcome.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from ..atomic import output_error
from ..errors import RunFolderError, UserError

LOCK_NAME = ".hba-fast.lock"


class RunLock:
    """The lock of one run folder (module docstring)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.fd: int | None = None

    def acquire(self) -> str | None:
        """Take the lock or raise RunFolderError naming its holder; returns a note when the file system cannot lock
        (the run goes on without the guard)."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise output_error(self.path, e, kept=False) from e
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            except OSError as e:
                raise output_error(self.path, e, kept=False) from e
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read(fd)
                os.close(fd)
                raise RunFolderError(f"{self.folder} is in use by another hba-fast process ({holder}, holding "
                                     f"{self.path}): one process per run folder; wait for it to end, or stop it "
                                     f"(kill -TERM <pid> writes its checkpoint), or use another folder with --set "
                                     f"run.out_dir=...") from None
            except OSError as e:
                if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                    os.close(fd)
                    raise output_error(self.path, e, kept=False) from e
                self.fd = fd
                return (f"the file system of {self.folder} cannot lock files ({e.strerror}): nothing stops a second "
                        f"process from using this run folder at the same time")
            if _same_file(fd, self.path):
                break
            os.close(fd)  # a failed start removed the file after we opened it: lock the one at the path now
        self.fd = fd
        try:  # who holds it, for the message of a second process; the lock itself does not depend on it
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} on host {socket.gethostname()}\n".encode(), 0)
        except OSError:  # a full disk: the run's own writes will say so, with the fix
            pass
        return None

    @contextlib.contextmanager
    def held(self) -> Iterator[RunLock]:
        """The lock for a block (acquire, then release however the block ends)."""
        self.acquire()
        try:
            yield self
        finally:
            self.release()

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # the lock goes with the last descriptor
            self.fd = None


def _read(fd: int) -> str:
    try:
        text = os.pread(fd, 200, 0).decode(errors="replace").strip()
    except OSError:
        text = ""
    return text or "a process that has not written its pid yet"


def _same_file(fd: int, path: Path) -> bool:
    try:
        at_path = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (mine.st_dev, mine.st_ino) == (at_path.st_dev, at_path.st_ino)


def hold_run_folder(folder: Path, dist) -> tuple[RunLock, str | None]:
    """Rank 0 takes the folder's lock; with several processes every rank learns the outcome and raises the same
    RunFolderError when it failed. Returns the lock (held on rank 0 only) and acquire's note."""
    lock = RunLock(folder)
    failed: UserError | None = None
    note = None
    if dist.is_main:
        try:
            note = lock.acquire()
        except UserError as e:  # held by another process, or a folder that cannot be made
            failed = e
    outcome = None if failed is None else str(failed)
    if dist.world > 1:
        import torch

        box = [outcome]
        torch.distributed.broadcast_object_list(box, src=0)
        outcome = box[0]
    if failed is not None:
        raise failed
    if outcome is not None:
        raise RunFolderError(outcome)
    return lock, note
