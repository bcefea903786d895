"""Triton support shared by the kernel files: the one probe of triton, the impl switch, the device size.

    triton, tl          the triton modules, or None when triton is not installed (the torch paths still work)
    jit                 triton.jit, or the identity without triton (the kernel files still import)
    interpreting()      TRITON_INTERPRET=1: Triton runs the kernels on the CPU (numpy), read at every call
    IMPLS               ("auto", "triton", "torch"), the values of every public function's `impl=`
    check_impl(impl)    ValueError naming the valid values
    use_triton(impl, x) whether to run the Triton kernel for x (the decision table below), or
                        TritonUnavailableError when impl="triton" cannot run here, naming the fix; `dtypes`
                        names the dtypes "auto" sends to Triton (default the float ones below; the policy's
                        mixed-op kernels pass uint8)

        impl      CUDA tensor, float32/float16/bfloat16    other tensors
        "auto"    Triton (when installed)                  torch
        "triton"  Triton                                   Triton on CPU under TRITON_INTERPRET=1, else an error
        "torch"   torch                                    torch

    multiprocessors(device)     streaming multiprocessors the launchers size their grids for (split-K,
                                split reductions): the device's own, None off CUDA and under the interpreter
    target_multiprocessors(n)   context manager: size grids as on a GPU with n multiprocessors whatever the
                                device, e.g. to compile the launches for an H100 (132) on a machine without one

Each kernel file keeps its own block-size heuristics (its "block-size heuristics" section); the only device
property they read is `multiprocessors`. This module imports only torch and triton, like the whole package.
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
import os
from collections.abc import Iterator

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - the torch paths still work; impl="triton" says what is missing
    triton = tl = None

IMPLS = ("auto", "triton", "torch")
KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)  # what the Triton kernels take


class TritonUnavailableError(RuntimeError, ValueError):
    """impl="triton" cannot run here: no triton package, or CPU tensors without TRITON_INTERPRET=1.

    Both a RuntimeError and a ValueError: hyper_batch_norm raised the first and hyper_conv2d the second."""


def jit(fn):
    """triton.jit, or the plain function when triton is not installed (never launched then)."""
    return triton.jit(fn) if triton is not None else fn


def interpreting() -> bool:
    """True under TRITON_INTERPRET=1 (kernels run on the CPU); read at each call, as tests change it."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def check_impl(impl: str, where: str = "impl") -> None:
    """ValueError unless impl is one of IMPLS; `where` names the caller in the message."""
    if impl not in IMPLS:
        raise ValueError(f"{where}: impl must be one of {IMPLS} ('auto': Triton on CUDA float tensors, torch "
                         f"elsewhere; 'triton': always the kernel; 'torch': never), got {impl!r}")


def use_triton(impl: str, x: torch.Tensor, where: str, dtypes: tuple[torch.dtype, ...] = KERNEL_DTYPES) -> bool:
    """Run the Triton kernel on x (and the tensors that go with it)? See the table in the module docstring.

    impl="auto" never raises; impl="triton" raises TritonUnavailableError where the kernel cannot run.
    Checks of the kernel's own (dtypes, sizes) stay with the kernel."""
    check_impl(impl, where)
    if impl == "torch":
        return False
    if impl == "auto":
        return triton is not None and x.is_cuda and x.dtype in dtypes
    if triton is None:
        raise TritonUnavailableError(f"{where}(impl='triton') needs the triton package: pip install triton, "
                                     "or use impl='torch'")
    if not x.is_cuda and not interpreting():
        raise TritonUnavailableError(
            f"{where}(impl='triton') needs CUDA tensors, or CPU tensors under TRITON_INTERPRET=1 (set before triton "
            f"is first imported; slow); x is on {x.device}. Use impl='torch' or impl='auto'.")
    return True


# ----------------------------------------------------------------------------- device size for the heuristics

_TARGET_SMS: contextvars.ContextVar[int | None] = contextvars.ContextVar("target_multiprocessors", default=None)


@contextlib.contextmanager
def target_multiprocessors(n: int) -> Iterator[None]:
    """Inside, the launchers size their grids as on a GPU with `n` streaming multiprocessors, whatever the device
    (CUDA, CPU, meta): split-K of the conv weight gradient, split reductions of batch norm. Nestable."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"target_multiprocessors: n must be a positive int (an H100 SXM or H200 has 132), got {n!r}")
    token = _TARGET_SMS.set(n)
    try:
        yield
    finally:
        _TARGET_SMS.reset(token)


@functools.cache
def _cuda_multiprocessors(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def multiprocessors(device: torch.device) -> int | None:
    """Streaming multiprocessors to size grids for: target_multiprocessors' n when active, else the CUDA device's
    count; None off CUDA and under the interpreter (no GPU to fill: launchers use few, problem-sized programs)."""
    target = _TARGET_SMS.get()
    if target is not None:
        return target
    if device.type != "cuda" or interpreting():
        return None
    return _cuda_multiprocessors(device.index if device.index is not None else torch.cuda.current_device())
