"""Graceful stop: SIGTERM, SIGINT (Ctrl-C) and SIGUSR1 (SLURM's `--signal=USR1@120`) end a run at a round boundary
with a checkpoint of its position inside the epoch, instead of killing it.

    SIGNALS.installed()   context manager (start_run, compare): while on, the first of those signals only records
                          itself (`SIGNALS.signum`); the trainer sees it at its next round boundary, writes the
                          checkpoint and raises `errors.StopRequested`, which the command line prints as one line and
                          turns into exit code 128 + the signal's number. Nested uses share one installation.
    a second signal       arriving more than REPEAT_WINDOW_S after the first exits at once (os._exit, 128 + its
                          number) with one line on stderr: no checkpoint is written then, and the one from before stays
                          intact (every checkpoint is written atomically: the old file until the rename). Signals
                          inside the window are the same request delivered twice: Ctrl-C reaches torchrun and its
                          workers, and torchrun forwards it to the workers again (torch.distributed.elastic's agent
                          sends the signal it got to every worker, then SIGKILL after its shutdown timeout).

Several processes (torchrun): every rank must stop at the same round (the checkpoint is a collective: each rank's
data position is gathered, rank 0 writes), though a signal may reach one rank only, or the ranks at different
times. `StopAgreement.poll()` is called by every rank at every round boundary, on the host: it starts an
asynchronous all_reduce (MAX) of this rank's signal number, a one-element CPU tensor in a gloo group of its own, and
returns the result of the all_reduce started at the previous boundary. So all ranks see the same answer at the same
round (one round after the signal), the common path adds no host sync with the GPU (nothing on CUDA is read; the
gloo reduction of 4 bytes runs in the background during the round and is waited for one round later), and the ranks'
host threads stay at most one round apart. Alternatives considered: reducing a device flag at each round would read
the device each round (a host sync per round on CUDA); reducing only at log intervals (which already read the device)
would be free but could take `train.log_every` steps to stop, while torchrun gives its workers 30 s before SIGKILL.
One process needs no agreement: `poll` reads the Python flag, nothing else.
"""
from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator

import torch

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)
REPEAT_WINDOW_S = 1.0  # a second signal within this time of the first is the same request delivered twice


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class StopSignals:
    """The process's stop request: the first stop signal's number (0: none), set by the handlers (module docstring)."""

    def __init__(self):
        self.signum = 0
        self._first_at: float | None = None
        self._depth = 0
        self._saved: dict[int, object] = {}

    @contextlib.contextmanager
    def installed(self) -> Iterator[StopSignals]:
        """Handle the stop signals while on (main thread only: elsewhere Python cannot install handlers, and the
        signals keep their default action). The outermost use installs and restores, and starts with no request."""
        outer = self._depth == 0 and threading.current_thread() is threading.main_thread()
        if outer:
            self.clear()
            self._saved = {s: signal.signal(s, self._handle) for s in STOP_SIGNALS}
        if outer or self._depth:
            self._depth += 1
        try:
            yield self
        finally:
            if self._depth:
                self._depth -= 1
                if self._depth == 0:
                    for s, handler in self._saved.items():
                        signal.signal(s, handler)
                    self._saved = {}
                    self.clear()

    def clear(self) -> None:
        self.signum, self._first_at = 0, None

    def request(self, signum: int) -> None:
        """Record a stop request, as the first signal does (also for tests and for code that embeds the trainer)."""
        if not self.signum:
            self.signum, self._first_at = int(signum), time.monotonic()

    def _handle(self, signum: int, frame) -> None:
        if not self.signum:
            self.request(signum)
            return
        if time.monotonic() - (self._first_at or 0.0) <= REPEAT_WINDOW_S:
            return  # the same request delivered twice (torchrun forwards what the workers got too)
        print(f"hba-fast: {signal_name(signum)} during the stop after {signal_name(self.signum)}: exiting at once "
              f"without a new checkpoint; the last checkpoint written stays intact", file=sys.stderr, flush=True)
        os._exit(128 + signum)


SIGNALS = StopSignals()  # the process's one set of handlers (signal handlers are per process)


class StopAgreement:
    """Every rank's answer to "stop before this round?" at every round boundary (module docstring)."""

    _groups: dict[int, tuple] = {}  # id of the default process group -> (that group, its gloo group for the flag)

    def __init__(self, world: int, signals: StopSignals = SIGNALS):
        self.world, self.signals = world, signals
        self._flag: torch.Tensor | None = None
        self._work = None
        self.group = self._group() if world > 1 else None

    @classmethod
    def _group(cls):
        """A gloo group beside the default one (collective: every rank builds its trainer, so every rank calls it)."""
        default = torch.distributed.distributed_c10d._get_default_group()
        if id(default) not in cls._groups:  # the default group is kept alive with it: its id is not reused
            cls._groups[id(default)] = (default, torch.distributed.new_group(backend="gloo"))
        return cls._groups[id(default)][1]

    def poll(self) -> int:
        """The agreed signal number (0: go on): this rank's request with one process; with several, the largest
        request of any rank as of the previous boundary (every rank calls this at every round boundary)."""
        if self.world == 1:
            return self.signals.signum
        agreed = 0
        if self._work is not None:
            self._work.wait()
            agreed = int(self._flag.item())  # a CPU tensor: no device read
        self._flag = torch.tensor([self.signals.signum], dtype=torch.int32)
        self._work = torch.distributed.all_reduce(self._flag, op=torch.distributed.ReduceOp.MAX, group=self.group,
                                                  async_op=True)
        return agreed

    def now(self) -> int:
        """The agreed signal number at once (a blocking all_reduce with several processes): for boundaries that come
        seldom, such as between the runs of `hba-fast compare`."""
        self.finish()
        if self.world == 1:
            return self.signals.signum
        flag = torch.tensor([self.signals.signum], dtype=torch.int32)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX, group=self.group)
        return int(flag.item())

    def finish(self) -> None:
        """Wait for the all_reduce in flight (the run ends or stops: leave no collective behind)."""
        if self._work is not None:
            self._work.wait()
            self._work = None
