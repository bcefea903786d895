"""The errors a user can fix, one type per failure kind, raised the same way by every backend.

Each message names the value at fault and the fix (SPEC section 8); the command line prints it as one line,
without a traceback, and exits with code 2. All derive from `UserError`; each also derives from the builtin
type callers used before (ValueError for bad input, RuntimeError for a state of the machine or the run).
"""
from __future__ import annotations


class UserError(Exception):
    """Base of every error the user can fix; the message says how."""


class ConfigError(UserError, ValueError):
    """A config value is unknown, of the wrong type or out of range."""


class DataError(UserError, ValueError):
    """A dataset path is missing, has the wrong layout or content, or cannot give the requested splits."""


class CorruptImageError(DataError):
    """An image of the dataset cannot be decoded and data.on_corrupt is 'error'."""


class ScheduleError(UserError, ValueError):
    """A schedule file is missing or is not a schedule written by `hba-fast search`."""


class DeviceError(UserError, RuntimeError):
    """The configured device (or a GPU-only option) is not available here."""


class BackendError(UserError, RuntimeError):
    """The configured data backend cannot run here."""


class CheckpointError(UserError, RuntimeError):
    """A checkpoint exists but cannot be used to resume this run."""


class RunFolderError(UserError, RuntimeError):
    """The run folder holds an earlier run that this one would overwrite or cannot continue."""


class NonFiniteLossError(UserError, RuntimeError):
    """The loss became NaN or Inf; the run stopped."""


class OutputError(UserError, OSError):
    """A file of the run cannot be written (disk full, no permission, read-only file system)."""


class StopRequested(Exception):
    """A stop signal (SIGTERM, SIGINT, SIGUSR1) ended the run at a round boundary, after a checkpoint of its position
    was written (hba_fast/run/stop.py). Not an error: the command line prints the message and the command that
    continues as one line, and exits with 128 + `signum`."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = signum
