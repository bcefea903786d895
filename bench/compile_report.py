"""What the compiler makes of the hyper-layer kernels for a Hopper GPU, read on any machine (no GPU needed).

The launchers of `hba_fast.kernels` run on meta tensors (real shapes, no memory), their grids sized for 132
multiprocessors (`hba_fast.kernels.target_multiprocessors`), with Triton's launch calls recorded instead of run:
each recorded launch is compiled for the target (default sm_90: H100/H200) with the ptxas bundled in the triton
wheel, specialised exactly as Triton's JIT would (ints equal to 1, 16-divisible ints and pointers), for every
autotuner config the launcher's pruning keeps. From each cubin:

    regs     registers per thread (255 is the cap)
    stack    bytes of per-thread stack: > 0 means register spills to local memory
    smem     shared memory per program, static + dynamic (Hopper: up to 227 KB)
    hgmma    Hopper warpgroup MMA instructions (the fast tensor-core path); hmma: Ampere-style MMA
    ldg128   global loads 128 bits wide, plain or asynchronous copies into shared memory
    narrow   narrower global loads: the compiler could not prove contiguity or alignment (or scalar loads)
    async    asynchronous global->shared copies (LDGSTS): the software pipeliner overlaps loads with MMAs

These are the compiler's numbers, not timings: they say which configs can be fast; `bench_kernels.py` on a GPU
says which are. Uses Triton's JIT binder (a private API, checked with triton 3.9) and must run without
TRITON_INTERPRET. `--quick` compiles one representative launch per kernel (the CI test runs it).

    python bench/compile_report.py --nets wrn-40-2            # every conv shape, every kept config
    python bench/compile_report.py --quick --json report.jsonl
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

if os.environ.get("TRITON_INTERPRET") == "1":
    sys.exit("compile_report.py compiles for a GPU target: run it without TRITON_INTERPRET=1")

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource, make_backend
from triton.runtime.autotuner import Autotuner
from triton.runtime.jit import JITFunction, create_function_from_signature

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from bench_kernels import NETS  # noqa: E402

from hba_fast.kernels import hyper_bn as hb  # noqa: E402
from hba_fast.kernels import hyper_conv as hc  # noqa: E402
from hba_fast.kernels import target_multiprocessors  # noqa: E402

SMS = 132  # H100 SXM / H200: the launchers size split-K and split reductions by it (meta tensors are not CUDA)


@dataclass
class Launch:
    kernel: JITFunction
    args: tuple
    configs: list  # triton.Config per candidate: the autotuner's kept configs, or the one fixed launch


@contextmanager
def recorded_launches():
    """Inside, Triton launches are appended to the yielded list instead of running (plain and autotuned kernels)."""
    calls: list[Launch] = []
    jit_run, tuned_run = JITFunction.run, Autotuner.run

    def record_jit(self, *args, grid, warmup, **kwargs):
        meta = {k: kwargs.pop(k) for k in ("num_warps", "num_stages") if k in kwargs}
        consts = {n: kwargs.pop(n) for n in list(kwargs) if n in self.arg_names}
        full = tuple(args) + tuple(consts[n] for n in self.arg_names[len(args):] if n in consts)
        calls.append(Launch(self, full, [triton.Config({}, num_warps=meta.get("num_warps", 4),
                                                       num_stages=meta.get("num_stages", 3))]))

    def record_tuned(self, *args, **kwargs):
        self.nargs = dict(zip(self.arg_names, args))
        calls.append(Launch(self.fn, tuple(args), self.prune_configs(kwargs)))
        self.nargs = None

    JITFunction.run, Autotuner.run = record_jit, record_tuned
    try:
        yield calls
    finally:
        JITFunction.run, Autotuner.run = jit_run, tuned_run


def conv_launches(B, cin, cout, h, k, s, p, dtype) -> list[tuple[str, Launch]]:
    """(kind, launch) of one hyper-conv forward and backward (fwd, dx, dw, dscale), channels_last like the GPU path."""
    meta = dict(device="meta", dtype=dtype)
    cl = torch.channels_last
    x = torch.empty(B, cin, h, h, **meta).contiguous(memory_format=cl)
    w = torch.empty(cout, cin, k, k, **meta).contiguous(memory_format=cl)
    scale = torch.empty(B, cout, device="meta", dtype=torch.float32)
    bias = torch.empty(cout, device="meta", dtype=torch.float32)
    ho = (h + 2 * p - k) // s + 1
    dy = torch.empty(B, cout, ho, ho, **meta).contiguous(memory_format=cl)
    conv = ((s, s), (p, p), (1, 1))
    with recorded_launches() as calls, target_multiprocessors(SMS):
        hc._launch_fwd(x, w, w, scale, bias, bias, *conv, True, cl)
        hc._launch_dx(dy, w, w, scale, x.shape, cl, *conv)
        hc._launch_dw(x, dy, scale, w.shape, *conv)
        hc._launch_dscale(dy, dy)
    return list(zip(("fwd", "dx", "dw", "dscale"), calls))


def bn_launches(B, c, h, dtype) -> list[tuple[str, Launch]]:
    """(kind, launch) of one training-mode hyper-BN forward and backward, channels_last."""
    x = torch.empty(B, c, h, h, device="meta", dtype=dtype).contiguous(memory_format=torch.channels_last)
    gamma = torch.empty(B, c, device="meta")
    stats = torch.empty(c, device="meta")
    with recorded_launches() as calls, target_multiprocessors(SMS):
        _, mean, rstd = hb._forward_triton(x, gamma, gamma, stats, stats, True, 0.1, 1e-5)
        hb._backward_triton(torch.empty_like(x), x, gamma, mean, rstd, True, True, True, torch.float32)
    return [(f"bn:{launch.kernel.fn.__name__.strip('_')}", launch) for launch in calls]


def compile_launch(launch: Launch, config: triton.Config, target: GPUTarget):
    """Compile a recorded launch for `target` with `config`, specialised as Triton's JIT would specialise it."""
    kernel = launch.kernel
    backend = make_backend(target)
    binder = create_function_from_signature(kernel.signature, kernel.params, backend)
    kwargs = dict(config.kwargs, num_warps=config.num_warps, num_stages=config.num_stages)
    bound, specialization, options = binder(*launch.args, **kwargs)
    options, signature, constexprs, attrs = kernel._pack_args(backend, kwargs, bound, specialization, options)
    key = (kernel.fn.__name__, str(specialization), str(sorted(options.__dict__.items())))
    return key, lambda: triton.compile(ASTSource(kernel, signature, constexprs, attrs), target=target,
                                       options=options.__dict__)


def read_kernel(compiled) -> dict:
    """Registers, stack, shared memory and an instruction census of a compiled kernel, via the wheel's cuobjdump."""
    tool = triton.knobs.nvidia.cuobjdump.path
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(compiled.asm["cubin"])
        f.flush()
        usage = subprocess.check_output([tool, "--dump-resource-usage", f.name], text=True)
        sass = subprocess.check_output([tool, "--dump-sass", f.name], text=True)
    res = dict(re.findall(r"(REG|STACK|SHARED|LOCAL):(\d+)", usage))
    ops = Counter(re.findall(r"\b(HGMMA|HMMA|LDGSTS[.A-Z0-9_]*|LDG\.E[.A-Z0-9_]*)", sass))
    loads = {op: n for op, n in ops.items() if op.startswith("LDG")}
    ldg128 = sum(n for op, n in loads.items() if op.endswith(".128"))
    return {"regs": int(res.get("REG", 0)), "stack": int(res.get("STACK", 0)),
            "smem": int(res.get("SHARED", 0)) + compiled.metadata.shared,
            "hgmma": ops["HGMMA"], "hmma": ops["HMMA"], "ldg128": ldg128, "narrow": sum(loads.values()) - ldg128,
            "async": sum(n for op, n in loads.items() if op.startswith("LDGSTS"))}


def quick_cases(dtype) -> list[tuple[str, list[tuple[str, Launch]]]]:
    """One representative launch per kernel: a WRN 3x3 conv, a strided 1x1 shortcut, a BN plane."""
    return [("3x3 64->64 16x16 b128", conv_launches(128, 64, 64, 16, 3, 1, 1, dtype)),
            ("1x1/2 64->128 16x16 b128", [kl for kl in conv_launches(128, 64, 128, 16, 1, 2, 0, dtype)
                                          if kl[0] in ("fwd", "dx")]),
            ("bn 128x64x16x16", bn_launches(128, 64, 16, dtype))]


def full_cases(nets, dtype):
    for net in nets:
        batch, make = NETS[net]
        for cin, cout, h, k, s, p in dict.fromkeys(make()):
            yield f"{net} {cin}->{cout} {h}x{h} k{k}/{s}", conv_launches(batch, cin, cout, h, k, s, p, dtype)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nets", nargs="+", default=["wrn-40-2"], choices=list(NETS))
    ap.add_argument("--kinds", nargs="+", default=["fwd", "dx", "dw"], help="conv kernels to report (full mode)")
    ap.add_argument("--quick", action="store_true", help="one representative launch per kernel, first config only")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    ap.add_argument("--arch", type=int, default=90, help="compute capability x10 (90 = Hopper)")
    ap.add_argument("--json", type=Path, help="write one JSON line per compiled launch here")
    args = ap.parse_args(argv)
    dtype = getattr(torch, args.dtype)
    target = GPUTarget("cuda", args.arch, 32)
    cases = quick_cases(dtype) if args.quick else full_cases(args.nets, dtype)
    compiled, rows = {}, []
    print(f"# sm_{args.arch}, {args.dtype}, triton {triton.__version__}: compiler resource report (not timings)")
    print(f"{'case':>34} {'kernel':>22} {'BM':>4} {'BN':>4} {'BK':>4} {'w':>2} {'st':>2} | {'regs':>4} {'stack':>5} "
          f"{'smem':>6} {'hgmma':>5} {'hmma':>4} {'ldg128':>6} {'narrow':>6} {'async':>5}")
    for case, launches in cases:
        for kind, launch in launches:
            if not args.quick and kind not in args.kinds:
                continue
            for cfg in launch.configs[:1] if args.quick else launch.configs:
                key, build = compile_launch(launch, cfg, target)
                if key not in compiled:
                    try:
                        compiled[key] = read_kernel(build())
                    except Exception as e:  # noqa: BLE001 - a config the compiler rejects is a finding
                        compiled[key] = {"error": f"{type(e).__name__}: {str(e).strip().splitlines()[0][:100]}"}
                r, c = compiled[key], cfg.kwargs
                tiles = [c.get(b, 0) for b in ("BLOCK_M", "BLOCK_N", "BLOCK_K")]
                head = (f"{case:>34} {kind:>22} {tiles[0]:4d} {tiles[1]:4d} {tiles[2]:4d} {cfg.num_warps:2d} "
                        f"{cfg.num_stages:2d}")
                print(f"{head} | {r['error']}" if "error" in r else
                      f"{head} | {r['regs']:4d} {r['stack']:5d} {r['smem']:6d} {r['hgmma']:5d} {r['hmma']:4d} "
                      f"{r['ldg128']:6d} {r['narrow']:6d} {r['async']:5d}", flush=True)
                rows.append({"case": case, "kernel": kind, **c, "num_warps": cfg.num_warps,
                             "num_stages": cfg.num_stages, **r})
    failed = sum("error" in r for r in compiled.values())
    print(f"# {len(compiled)} distinct compilations; {failed} rejected; "
          f"{sum(r.get('stack', 0) > 0 for r in compiled.values())} spill")
    if args.json:
        args.json.write_text("".join(json.dumps({**r, "arch": args.arch, "dtype": args.dtype,
                                                 "triton": triton.__version__}) + "\n" for r in rows))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
