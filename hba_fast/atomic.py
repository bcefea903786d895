"""Every file a run writes, written so that a kill or a full disk at any moment loses nothing.

Whole files (checkpoint.pt, schedule.json, schedule.png, model.pt, config.yaml, environment.json, result.json):
    write the bytes to a temporary file beside the target, fsync it, `os.replace` it over the target, fsync the
    folder. A reader, or a run killed at any instant, sees the old file or the new one, never a torn or empty one.
    Temporary files are named `<name>.hba<8 hex>.tmp`; `remove_orphans(folder)` deletes those a killed write left.
    New files get mode 0666 & ~umask, like any file the user makes (mkstemp's 0600 is meant for secrets).
Append-only logs (metrics.jsonl, log.txt): each line is one `os.write` of the whole line on an O_APPEND
    descriptor; a write cut short (full disk) is cut back to the old length, so no torn line stays. A killed
    process loses no line it wrote (the kernel holds it); only a crash of the machine can lose the lines since
    the last `sync`, which the run log calls at every checkpoint (and at the end): an fsync per line cost 2.3 ms
    against 0.02 ms without (measured on the CPU dev machine's disk), and a resume cuts metrics.jsonl back to its
    checkpoint's length anyway.
    A resumed run truncates metrics.jsonl to the length its checkpoint recorded (`truncate`), so rows written
    after that checkpoint by the killed run are not repeated.
Objects for torch.save are serialised in memory first: torch's zip writer turns an OSError of the file into an
    opaque `RuntimeError: [enforce fail at inline_container.cc]`, while our own `os.write` keeps ENOSPC as ENOSPC.
    The price is one host copy of the object while it is written.

Any OSError becomes an `OutputError` naming the file, the cause and the fix (free space, writable folder, or
another run.out_dir -- `other` names the setting that picks the folder where it is not run.out_dir, e.g. `--out`),
and saying that the file keeps its previous content.
"""
from __future__ import annotations

import errno
import io
import json
import os
import re
import secrets
import shutil
from pathlib import Path

from .errors import OutputError

# Ours, and the mkstemp names of checkpoints written by earlier versions.
_TMP = re.compile(r"^(.+\.hba[0-9a-f]{8}|checkpoint\.pt\.[a-z0-9_]{8})\.tmp$")


def output_error(path: str | Path, e: OSError, kept: bool = True, other: str = "run.out_dir") -> OutputError:
    """An OSError while writing `path`, as one line with its cause and the fix (`other`: the setting that picks
    another folder)."""
    path = Path(path)
    folder = path.parent
    code = errno.errorcode.get(e.errno or 0, "")
    cause = f"{e.strerror or e} ({code})" if code else f"{e.strerror or e}"
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        try:
            free = f"{shutil.disk_usage(folder).free / 2**20:.0f} MiB free"
        except OSError:
            free = "free space unknown"
        fix = f"free space on the disk holding {folder} ({free}), or set {other} to a folder on another disk"
    elif e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = f"make {folder} writable, or set {other} to a writable folder"
    else:
        fix = f"check the disk holding {folder}, or set {other} to another folder"
    keep = f"; {path.name} keeps its previous content" if kept and path.exists() else ""
    return OutputError(f"cannot write {path}: {cause}{keep}; {fix}")  # errno stays on __cause__: str() is this line


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some file systems do not open folders; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_bytes(path: str | Path, data: bytes, other: str = "run.out_dir") -> None:
    """Write `data` to `path` atomically: temp file, fsync, rename, fsync the folder."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.hba{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies, as for any new file
    except OSError as e:
        raise output_error(path, e, other=other) from e
    try:
        try:
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise output_error(path, e, other=other) from e
        raise
    _fsync_dir(path.parent)


def write_text(path: str | Path, text: str, other: str = "run.out_dir") -> None:
    write_bytes(path, text.encode(), other)


def write_json(path: str | Path, obj, indent: int | None = 2, other: str = "run.out_dir") -> None:
    write_text(path, json.dumps(obj, indent=indent) + "\n", other)


def save_torch(path: str | Path, obj) -> None:
    """torch.save(obj) to `path` atomically (serialised in memory first: see the module docstring)."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    write_bytes(path, buf.getbuffer())


def save_figure(path: str | Path, fig, dpi: int = 110) -> None:
    """A matplotlib figure as a PNG at `path` atomically (rendered in memory first); the figure is closed."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    try:
        fig.savefig(buf, dpi=dpi, format="png")
    finally:
        plt.close(fig)
    write_bytes(path, buf.getbuffer())


def append_line(path: str | Path, line: str, sync: bool = False) -> None:
    """Append one line (a newline is added) to an append-only log, whole or not at all; `sync`: fsync it too."""
    path = Path(path)
    data = (line.rstrip("\n") + "\n").encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    except OSError as e:
        raise output_error(path, e, kept=False) from e
    try:
        size = os.fstat(fd).st_size
        try:
            _write_all(fd, data)
            if sync:
                os.fsync(fd)
        except OSError as e:
            try:
                os.ftruncate(fd, size)  # no torn line
            except OSError:
                pass
            raise output_error(path, e, kept=False) from e
    finally:
        os.close(fd)


def sync(path: str | Path) -> None:
    """fsync an append-only log (and its folder, for a new file): the lines appended so far survive a crash of
    the machine. A missing file is nothing to sync."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return
    except OSError as e:
        raise output_error(path, e, kept=False) from e
    try:
        os.fsync(fd)
    except OSError as e:
        raise output_error(path, e, kept=False) from e
    finally:
        os.close(fd)
    _fsync_dir(path.parent)


def size(path: str | Path) -> int:
    """Length of a file in bytes (0 when it does not exist)."""
    try:
        return Path(path).stat().st_size
    except FileNotFoundError:
        return 0


def truncate(path: str | Path, length: int) -> bool:
    """Cut an append-only log back to `length` bytes; True when something was cut."""
    path = Path(path)
    if size(path) <= length:
        return False
    try:
        os.truncate(path, length)
    except OSError as e:
        raise output_error(path, e, kept=False) from e
    return True


def remove_orphans(folder: str | Path) -> list[str]:
    """Delete the temporary files that killed writes left in `folder`; returns their names."""
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for p in folder.iterdir():
        if _TMP.match(p.name) and p.is_file():
            try:
                p.unlink()
                removed.append(p.name)
            except OSError:
                pass
    return sorted(removed)
