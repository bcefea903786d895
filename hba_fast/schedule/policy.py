"""`SchedulePolicy`: a learned schedule (or a fixed policy) applied in the user's own training code.

    policy = hba_fast.SchedulePolicy.from_file("schedule.json", epochs=E)   # stretched to E epochs (as train)
    policy = hba_fast.SchedulePolicy.from_pba("rcifar10_16_wrn.txt", epochs=E)  # PBA's schedule, PBA's replay
    policy.set_epoch(e)                                                   # at the start of each epoch
    policy(img)                      # one PIL image, uint8 CHW tensor or HWC ndarray -> the same type (Pillow)
    policy.batch(images)             # uint8 (B, 3, H, W) on any device -> same (hba_fast.augment.ops, per sample)
    policy.dali(images)              # inside the user's DALI pipeline_def(enable_conditionals=True): HWC uint8

All three apply the same rule with the same ops. A schedule's rule is PBA's (SPEC 3): per image K ~ {0: 0.2,
1: 0.3, 2: 0.5}, the 30 slots walked in a fresh random order, the first K accepted applied, each with its
continuous magnitude and a random sign for the signed ops. A fixed policy (AutoAugment's) picks one of its
sub-policies uniformly and applies each of its ops with its own probability. Only the implementations differ:
- `__call__`: Pillow's own functions (`hba_fast.augment.pil`), the reference; the draw is `hba_fast.augment.pba_draw`
  (numpy). Picklable with no tensors inside, so it works in a DataLoader under every start method (fork, spawn,
  forkserver), persistent workers too. Each DataLoader worker draws from its own generator; with `seed`, made at
  each epoch from (seed, worker id, epoch) alone, so a worker's draws depend only on those and on how many it has
  made in the epoch (never on torch's seed): the same seed gives the same images in any process; workers never
  repeat each other. With seed=None, fresh entropy in every process. The epoch lives in shared memory, so
  `set_epoch` in the main process reaches persistent workers too (call it before iterating the loader).
- `batch`: the draw is `hba_fast.augment.policy.sample_policy` (torch, on the images' device), the ops
  `hba_fast.augment.ops`; on CUDA with static shapes (`apply_draw(static=True)`): no host sync, graph-capturable. A
  schedule's entry comes from a `hba_fast.schedule.sampler.ScheduleSampler` (the trainer's): one copy of the schedule
  per device and a static per-device buffer holding the current epoch's entry, which `set_epoch` rewrites on every
  device used so far; so a CUDA graph captured around `batch` reads the epoch set last (call `set_epoch` outside
  the graph, before its replay), not the one it was captured in.
- `dali`: the draw comes from `pba_draw` through a per-sample `fn.external_source`; the ops are
  `hba_fast/augment/dali_ops.py` (`schedule/dali.py`).
A schedule of E_s entries used for `epochs` epochs takes entry min(E_s - 1, floor(e E_s / epochs + 1/2)) at epoch e
(`hba_fast.schedule.file.stretch_index`, as `hba-fast train`); with epochs=None, entry min(e, E_s - 1). A PBA file
(`from_pba`) is stretched by PBA's own replay when it is read (hba_fast/schedule/pba.py).
"""
from __future__ import annotations

import multiprocessing
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..augment.ops import OP_INDEX, OPS, check_images
from ..augment.pba_draw import Draw, draw_pba, draw_subpolicy
from ..augment.policy import MAX_OPS, PolicyDraw, apply_draw, sample_policy
from ..errors import ConfigError
from .file import Schedule, read_schedule, stretch_index
from .sampler import ScheduleSampler

_SIGNED_OPS = torch.tensor([op.signed for op in OPS])  # (15,)


class _SharedEpoch:
    """An int in shared memory: written by `set_epoch` in the main process, read by DataLoader workers (forked
    or spawned). Pickled outside process start-up (pickle.dumps), it becomes a plain copy."""

    def __init__(self, value: int = 0):
        self._value = multiprocessing.RawValue("q", value)

    @property
    def value(self) -> int:
        return int(self._value.value)

    @value.setter
    def value(self, v: int) -> None:
        self._value.value = int(v)

    def __getstate__(self):
        from multiprocessing.context import get_spawning_popen

        return {"shared": self._value} if get_spawning_popen() is not None else {"plain": self.value}

    def __setstate__(self, state):
        self._value = state["shared"] if "shared" in state else multiprocessing.RawValue("q", state["plain"])


class SchedulePolicy:
    """A per-epoch augmentation policy for the user's own pipeline (module docstring).

    Build it with `from_file`, `from_pba`, `from_arrays` (a schedule: probs, mags (E_s, 30)), `fixed` (sub-policies)
    or `autoaugment`. `seed` alone fixes every draw, in every process and DataLoader worker (None: fresh entropy)."""

    def __init__(self, probs=None, mags=None, epochs: int | None = None, seed: int | None = None,
                 subpolicies: Sequence[Sequence[tuple[int, float, float]]] | None = None, name: str = "schedule"):
        if (probs is None) == (subpolicies is None):
            raise ValueError("give exactly one of a schedule (probs, mags) and sub-policies")
        self.name, self.seed = name, seed
        self.subpolicies = None
        if subpolicies is not None:
            self.subpolicies = tuple(tuple((int(k), float(p), float(m)) for k, p, m in sub) for sub in subpolicies)
            if not self.subpolicies or any(len(sub) > MAX_OPS or not sub for sub in self.subpolicies):
                raise ValueError(f"a fixed policy needs sub-policies of 1 to {MAX_OPS} ops")
            self.probs = self.mags = self.schedule = None
        else:
            schedule = probs if isinstance(probs, Schedule) else Schedule(probs, mags, ranges="any", source=name)
            self.schedule = schedule
            self.probs, self.mags = schedule.probs, schedule.mags  # (E_s, 30) float32 each
        if epochs is not None and (not isinstance(epochs, int) or epochs < 1):
            raise ConfigError(f"epochs must be a positive int (the epochs of your training run), got {epochs!r}")
        self.epochs = epochs
        self._epoch = _SharedEpoch(0)
        self._fresh()

    def _fresh(self) -> None:
        """What each process makes for itself, on first use: generators, device tables, the ScheduleSampler."""
        # the schedule's entry on each device for `batch` (epochs=None: entry min(e, E_s - 1), the identity stretch)
        self._sampler: ScheduleSampler | None = None
        self._rng: np.random.Generator | None = None
        self._rng_owner: tuple | None = None
        self._on: dict[torch.device, tuple] = {}  # per-device tables of a fixed policy for `batch`
        self._generators: dict[torch.device, torch.Generator] = {}
        self._generators_owner: tuple | None = None
        self._devices: set[torch.device] = set()  # where `batch` has put the schedule's entry buffer

    def _schedule_sampler(self) -> ScheduleSampler:
        if self._sampler is None:
            self._sampler = ScheduleSampler(self.schedule, self.epochs or len(self.probs))
        return self._sampler

    # ------------------------------------------------------------------------------------------ construction
    @classmethod
    def from_file(cls, path: str | Path, epochs: int | None = None, seed: int | None = None) -> SchedulePolicy:
        """A schedule.json written by `hba-fast search` (or a json-flat export, or 'pba:FILE'), stretched to `epochs`
        (`read_schedule`: linearly; a PBA file by PBA's replay)."""
        return cls(read_schedule(path, epochs), epochs=epochs, seed=seed, name=Path(str(path)).name)

    @classmethod
    def from_pba(cls, path: str | Path, epochs: int | None = None, seed: int | None = None,
                 policy_epochs: int | None = None) -> SchedulePolicy:
        """A PBA schedule file (PBA's published schedules/*.txt, or `hba-fast export --to pba`), PBA's slot order and
        levels read as PBA reads them (hba_fast/schedule/pba.py). It covers `policy_epochs` epochs (PBA's
        --hp_policy_epochs: default 200, 160 for PBA's published rsvhn_16_wrn.txt); with `epochs`, it is stretched to
        a run of that many as PBA's own replay does (each policy segment int(n epochs / policy_epochs) epochs, the
        rest holding the last policy)."""
        from .pba import PREFIX, split_spec

        file, named = split_spec(path)
        spec = f"{PREFIX}{file}@{policy_epochs or named}" if policy_epochs or named else f"{PREFIX}{file}"
        return cls(read_schedule(spec, epochs), epochs=epochs, seed=seed, name=file.name)

    @classmethod
    def from_arrays(cls, probs, mags, epochs: int | None = None, seed: int | None = None) -> SchedulePolicy:
        """probs, mags (E_s, 30) (or (30,) for one policy) in slot order, magnitudes in SPEC 3's units."""
        return cls(probs, mags, epochs=epochs, seed=seed)

    @classmethod
    def fixed(cls, subpolicies: Sequence[Sequence[tuple[str, float, float]]], seed: int | None = None,
              name: str = "fixed") -> SchedulePolicy:
        """A fixed policy: sub-policies of (op name, probability, magnitude in SPEC 3's units)."""
        subs = []
        for sub in subpolicies:
            ops = []
            for op_name, p, m in sub:
                if op_name not in OP_INDEX:
                    raise ConfigError(f"unknown op {op_name!r} in a fixed policy; valid ops: {', '.join(OP_INDEX)}")
                if not 0 <= p <= 1:
                    raise ConfigError(f"probability {p} of {op_name} is outside [0, 1]")
                ops.append((OP_INDEX[op_name], p, m))
            subs.append(ops)
        return cls(subpolicies=subs, seed=seed, name=name)

    @classmethod
    def autoaugment(cls, name: str = "cifar10", seed: int | None = None) -> SchedulePolicy:
        """AutoAugment's published policy `name` (`hba_fast.augment.baselines.AUTOAUGMENT`: cifar10 | svhn |
        imagenet), its levels mapped to magnitudes as `hba-fast train --augment autoaugment` maps them (levels.py),
        so a user's own training gets the policy hba-fast compared against."""
        from ..augment.baselines import AUTOAUGMENT, aa_magnitude

        if name not in AUTOAUGMENT:
            raise ConfigError(f"no AutoAugment policy {name!r}; there are: {', '.join(AUTOAUGMENT)}")
        subs = [[(op, p, aa_magnitude(op, level)) for op, p, level in sub] for sub in AUTOAUGMENT[name]]
        return cls.fixed(subs, seed=seed, name=f"autoaugment-{name}")

    # ------------------------------------------------------------------------------------------ epochs
    def set_epoch(self, epoch: int) -> None:
        """The epoch (0-based) of the training run whose policy the next images get; a schedule's entry is also
        copied into the static buffer of every device `batch` has used (what a captured graph reads)."""
        if not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"epoch must be an int >= 0, got {epoch!r}")
        self._epoch.value = epoch
        for device in self._devices:
            self._schedule_sampler().set_epoch(epoch, device)

    @property
    def epoch(self) -> int:
        return self._epoch.value

    @property
    def schedule_epochs(self) -> int:
        return 1 if self.probs is None else len(self.probs)

    def entry_index(self, epoch: int | None = None) -> int:
        """The schedule entry used at `epoch` (default: the current one)."""
        epoch = self.epoch if epoch is None else epoch
        return 0 if self.schedule is None else stretch_index(epoch, len(self.probs), self.epochs or len(self.probs))

    def entry(self, epoch: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(probs (30,), mags (30,)) of the current (or given) epoch; a schedule only."""
        if self.probs is None:
            raise ValueError(f"{self.name} is a fixed policy; it has sub-policies, not per-slot entries")
        k = self.entry_index(epoch)
        return self.probs[k], self.mags[k]

    # ------------------------------------------------------------------------------------------ one image
    def draw(self, rng: np.random.Generator | None = None) -> Draw:
        """The ops for one image at the current epoch: ((op index, signed magnitude), ...), at most two."""
        rng = rng if rng is not None else self._generator()
        if self.subpolicies is not None:
            return draw_subpolicy(self.subpolicies, rng)
        probs, mags = self.entry()
        return draw_pba(probs, mags, rng)

    def _generator(self) -> np.random.Generator:
        """This process's (and DataLoader worker's) own generator, made on first use in it. With a seed, made afresh
        at each epoch from (seed, worker id, epoch) alone: the draws of a worker depend on nothing else (not on
        torch's seed, nor on what earlier epochs drew); without one, from fresh entropy, once per process."""
        worker = _worker_id()
        owner = (os.getpid(), worker) if self.seed is None else (os.getpid(), worker, self.epoch)
        if self._rng is None or self._rng_owner != owner:
            if self.seed is None:
                self._rng = np.random.default_rng()
            else:
                self._rng = np.random.default_rng(_seed_words(self.seed, worker, self.epoch))
            self._rng_owner = owner
        return self._rng

    def __call__(self, img):
        """Augment one image with Pillow: a PIL image (made RGB), a uint8 CHW tensor or a uint8 HWC ndarray;
        returns the same kind."""
        from PIL import Image

        from ..augment.pil import apply_pil_op

        rng = self._generator()
        if isinstance(img, Image.Image):
            pil, back = (img if img.mode == "RGB" else img.convert("RGB")), None
        elif isinstance(img, torch.Tensor):
            if img.dtype != torch.uint8 or img.dim() != 3 or img.shape[0] != 3:
                raise TypeError(f"a tensor image must be uint8 (3, H, W), got {img.dtype} {tuple(img.shape)}; "
                                f"use the policy before ToTensor() (it expects uint8 pixels)")
            pil, back = Image.fromarray(img.permute(1, 2, 0).contiguous().cpu().numpy()), "tensor"
        elif isinstance(img, np.ndarray):
            if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
                raise TypeError(f"an array image must be uint8 (H, W, 3), got {img.dtype} {img.shape}")
            pil, back = Image.fromarray(img), "array"
        else:
            raise TypeError(f"SchedulePolicy takes a PIL image, a uint8 (3, H, W) tensor or a uint8 (H, W, 3) "
                            f"array, got {type(img).__name__}; for batches use policy.batch(images)")
        for op, m in self.draw(rng):
            pil = apply_pil_op(pil, op, m, rng)
        if back == "tensor":
            return torch.from_numpy(np.asarray(pil).copy()).permute(2, 0, 1).contiguous().to(img.device)
        if back == "array":
            return np.asarray(pil).copy()
        return pil

    # ------------------------------------------------------------------------------------------ a batch
    def batch_draw(self, batch: int, device: torch.device | str,
                   generator: torch.Generator | None = None) -> PolicyDraw:
        """The ops of a batch (PolicyDraw, (B, 2) ops and signed magnitudes) drawn on `device`, no host sync."""
        device = torch.device(device)
        generator = generator if generator is not None else self._torch_generator(device)
        if self.subpolicies is None:
            entry = self._schedule_sampler().sample(batch, self.epoch, device)  # the device's static entry buffer
            self._devices.add(device)
            return sample_policy(entry.probs, entry.mags, generator)
        if device not in self._on:
            n = len(self.subpolicies)
            table = torch.zeros(n, MAX_OPS, 3, dtype=torch.float64)  # (op, prob, magnitude); op -1 pads
            table[:, :, 0] = -1
            for i, sub in enumerate(self.subpolicies):
                for pos, (op, p, m) in enumerate(sub):
                    table[i, pos] = torch.tensor([op, p, m], dtype=torch.float64)
            self._on[device] = (table.to(device), _SIGNED_OPS.to(device))
        table, signed = self._on[device]
        pick = torch.randint(len(self.subpolicies), (batch,), generator=generator, device=device)  # (B,)
        chosen = table[pick]  # (B, 2, 3)
        u = torch.rand(batch, MAX_OPS, 2, generator=generator, device=device)  # accept, sign
        ops = chosen[..., 0].long()
        applied = (ops >= 0) & (u[..., 0] < chosen[..., 1])  # (B, 2)
        flip = signed[ops.clamp(min=0)] & (u[..., 1] < 0.5)
        mags = torch.where(flip, -chosen[..., 2], chosen[..., 2]).float()
        ops = torch.where(applied, ops, -1)  # (B, 2); the slot of a fixed policy is its op
        return PolicyDraw(ops, ops, torch.where(applied, mags, 0.0), applied.sum(1))

    def _torch_generator(self, device: torch.device) -> torch.Generator:
        """This process's (and worker's) generator on `device` for `batch`, made once there (a CUDA graph captured
        around `batch` holds it): seeded from (seed, worker id) alone, or from fresh entropy without a seed."""
        worker = _worker_id()
        if self._generators_owner != (os.getpid(), worker):  # a forked process (a worker) makes its own
            self._generators, self._generators_owner = {}, (os.getpid(), worker)
        if device not in self._generators:
            g = torch.Generator(device=device)
            if self.seed is None:
                g.seed()
            else:
                words = np.random.SeedSequence(_seed_words(self.seed, worker)).generate_state(2, np.uint32)
                g.manual_seed((int(words[0]) << 31 | int(words[1])) % 2**63)
            self._generators[device] = g
        return self._generators[device]

    def batch(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Augment uint8 images (B, 3, H, W) on their device, each sample with its own draw; uint8 out.

        On CUDA the batch is applied with static shapes (no host sync, capturable in a CUDA graph); on the CPU
        each op runs on the samples that drew it (faster there)."""
        check_images(images)
        draw = self.batch_draw(images.shape[0], images.device, generator)
        generator = generator if generator is not None else self._torch_generator(images.device)
        return apply_draw(images, draw, static=images.is_cuda, generator=generator)

    # ------------------------------------------------------------------------------------------ DALI
    def dali(self, images):
        """Inside a DALI `pipeline_def(enable_conditionals=True)`: HWC uint8 images (CPU or GPU) -> augmented."""
        from .dali import apply_schedule_policy  # DALI is optional: imported on first use

        return apply_schedule_policy(images, self)

    # ------------------------------------------------------------------------------------------ pickling
    def __getstate__(self):
        """The schedule (numpy), the settings and the shared epoch; no tensors (spawn and forkserver hand tensors to
        a new process through file descriptors that close before the worker starts) and no generators: every
        process makes its own (`_fresh`)."""
        keep = ("name", "seed", "subpolicies", "probs", "mags", "schedule", "epochs", "_epoch")
        return {k: self.__dict__[k] for k in keep}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._fresh()

    def __repr__(self) -> str:
        over = f" over {self.epochs} epochs" if self.epochs else ""
        what = (f"{len(self.subpolicies)} sub-policies" if self.subpolicies is not None
                else f"{self.schedule_epochs} schedule entries{over}")
        return f"SchedulePolicy({self.name!r}, {what}, epoch {self.epoch})"


def _worker_id() -> int | None:
    """The torch DataLoader worker's id inside a worker, else None (the main process)."""
    info = torch.utils.data.get_worker_info()
    return None if info is None else int(info.id)


def _seed_words(seed: int, worker: int | None, *more: int) -> list[int]:
    """The entropy of a seeded generator: the seed, then 0 (main process) or 1 and the worker id, then `more`."""
    return [int(seed) % 2**64, *((0,) if worker is None else (1, worker)), *more]

