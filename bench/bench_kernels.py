"""Benchmark the fused hyper-layer kernels against their honest baselines, side by side, in bf16.

hyper-conv, for every distinct conv shape of WRN-40-2 and WRN-28-10 (batch 128, 32x32) and ResNet-50
(batch 256, 224x224), forward ("fwd") and forward + backward of every input ("fwdbwd"):
    fused        hba_fast.kernels.hyper_conv2d(impl="triton"): one implicit GEMM, two accumulators
    two_conv     hyper_conv2d_ref: conv(x, w0) + scale * conv(x, wu), two cuDNN convs (STN's way)
    cudnn_2cout  one cuDNN conv with 2*Cout outputs and no combine: the same FLOPs, the floor to beat
hyper-BN, on the BN shapes of the same nets (every distinct conv output (C, H)), training mode:
    fused        hba_fast.kernels.hyper_batch_norm (public function, impl="triton")
    native_bn    F.batch_norm with a shared affine (what a plain network pays)

FLOPs of one hyper-conv forward = 2 convs = 4*B*Ho*Wo*Cout*Cin*kh*kw; forward + backward = 3x that.
Floor per shape: max(FLOPs / measured matmul rate, minimal bytes / measured copy rate), both ceilings measured at
the start of the run (an 8192^3 bf16 matmul, a 1 GiB device copy counting read + write); minimal bytes: forward
reads x, w0, wu and writes y, yu; backward reads dy, x, w0, wu, yu and writes dx, dw0, dwu. "x floor" is the
fused time over that floor.
Timings: triton.testing.do_bench, median. Printed as ms and TFLOP/s (GB/s for BN: minimal traffic,
2 passes forward and 5 forward+backward) against the device peak; JSON lines appended to --out (default
bench/results/kernels.jsonl) as they are measured (a run stopped by a time limit keeps what it measured), with
device, versions, git sha (`HBA_GIT_SHA` on a copy without .git) and time, plus per net one summary line (layer
times weighted by how often each shape occurs) and target rows (`metric`, `value`, `goal`, `cmp`, read by
bench/summarize.py): geomean over shapes of the speed-up vs two_conv and of fused / cudnn_2cout (goals in
bench/targets.py).

    python bench/bench_kernels.py                 # all nets (needs CUDA)
    python bench/bench_kernels.py --nets wrn-40-2 wrn-28-10 --out $OUT/results.jsonl
    python bench/bench_kernels.py --smoke         # tiny shapes, CPU, TRITON_INTERPRET=1; writes only to --out
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections import Counter
from pathlib import Path

if "--smoke" in sys.argv:  # must precede the first triton import
    os.environ["TRITON_INTERPRET"] = "1"

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from targets import goal as target_goal  # noqa: E402

from hba_fast.kernels import hyper_batch_norm, hyper_conv2d, hyper_conv2d_ref
from hba_fast.run.environment import environment as hba_environment

RESULTS = ROOT / "bench" / "results" / "kernels.jsonl"
# (substring of torch.cuda.get_device_name, dense bf16 TFLOP/s, HBM GB/s); first match wins.
PEAKS = [("H200", 989.0, 4800.0), ("H100 PCIe", 756.0, 2000.0), ("H100 NVL", 835.0, 3900.0), ("H100", 989.0, 3350.0),
         ("B200", 2250.0, 8000.0), ("A100", 312.0, 2039.0), ("L40S", 362.0, 864.0), ("A10G", 70.0, 600.0)]


# ----------------------------------------------------------------------------- shapes from the architectures


def wrn_convs(depth: int, k: int, size: int = 32) -> list[tuple]:
    """Convs of WRN-depth-k as (Cin, Cout, H_in, kernel, stride, padding), one entry per layer."""
    n = (depth - 4) // 6
    convs = [(3, 16, size, 3, 1, 1)]
    cin, h = 16, size
    for width, stride in ((16 * k, 1), (32 * k, 2), (64 * k, 2)):
        for i in range(n):
            s = stride if i == 0 else 1
            convs.append((cin, width, h, 3, s, 1))
            if cin != width or s != 1:
                convs.append((cin, width, h, 1, s, 0))  # projection shortcut
            h //= s
            convs.append((width, width, h, 3, 1, 1))
            cin = width
    return convs


def resnet50_convs(size: int = 224) -> list[tuple]:
    """Convs of torchvision's ResNet-50 (stride on the 3x3), one entry per layer."""
    convs = [(3, 64, size, 7, 2, 3)]
    cin, h = 64, size // 4  # stem conv stride 2, then max-pool stride 2
    for mid, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
        for i in range(blocks):
            s = stride if i == 0 else 1
            convs += [(cin, mid, h, 1, 1, 0), (mid, mid, h, 3, s, 1), (mid, 4 * mid, h // s, 1, 1, 0)]
            if i == 0:
                convs.append((cin, 4 * mid, h, 1, s, 0))  # downsample
            cin, h = 4 * mid, h // s
    return convs


NETS = {"wrn-40-2": (128, lambda: wrn_convs(40, 2)), "wrn-28-10": (128, lambda: wrn_convs(28, 10)),
        "resnet-50": (256, resnet50_convs)}


def out_size(h: int, k: int, s: int, p: int) -> int:
    return (h + 2 * p - k) // s + 1


def smoke_shapes(convs: list[tuple]) -> list[tuple]:
    """A few real shapes (3x3 s1, strided, 1x1) shrunk to channels <= 8 and H <= 8."""
    picked = {}
    for c in convs:
        picked.setdefault((c[3], c[4]), c)
    return [(min(c[0], 8), min(c[1], 8), min(c[2], 8), *c[3:]) for c in list(picked.values())[:3]]


# ----------------------------------------------------------------------------- timing


def timer(smoke: bool):
    if smoke:
        def run(fn):
            fn()
            t0 = time.perf_counter()
            fn()
            return 1e3 * (time.perf_counter() - t0)
        return run
    import triton.testing

    return lambda fn: triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")


def conv_cases(B, cin, cout, h, k, s, p, dtype, device, memory_format):
    """{(impl, mode): closure} for one conv shape; every closure includes what its name says and no more."""
    x = torch.randn(B, cin, h, h, device=device, dtype=dtype).contiguous(memory_format=memory_format)
    w0 = torch.randn(cout, cin, k, k, device=device, dtype=dtype) * (cin * k * k) ** -0.5
    wu = torch.randn_like(w0)
    scale = torch.randn(B, cout, device=device, dtype=dtype)
    b0 = torch.randn(cout, device=device, dtype=dtype)
    bu = torch.randn(cout, device=device, dtype=dtype)
    wcat = torch.cat([w0, wu]).requires_grad_(True)  # (2*Cout, Cin, k, k): the one-conv floor
    bcat = torch.cat([b0, bu]).requires_grad_(True)
    ho = out_size(h, k, s, p)
    dy = torch.randn(B, cout, ho, ho, device=device, dtype=dtype).contiguous(memory_format=memory_format)
    dy2 = torch.cat([dy, dy], 1).contiguous(memory_format=memory_format)
    leaves = [t.requires_grad_(True) for t in (x, w0, wu, scale, b0, bu)]
    fused = lambda: hyper_conv2d(x, w0, wu, scale, b0, bu, s, p, impl="triton")
    two = lambda: hyper_conv2d_ref(x, w0, wu, scale, b0, bu, s, p)
    flat = lambda: F.conv2d(x, wcat, bcat, s, p)

    def fwdbwd(fn, out_grad, inputs):
        return lambda: torch.autograd.grad(fn(), inputs, out_grad)

    def fwd(fn):
        def run():
            with torch.no_grad():
                return fn()
        return run

    return {("fused", "fwd"): fwd(fused), ("two_conv", "fwd"): fwd(two), ("cudnn_2cout", "fwd"): fwd(flat),
            ("fused", "fwdbwd"): fwdbwd(fused, dy, leaves), ("two_conv", "fwdbwd"): fwdbwd(two, dy, leaves),
            ("cudnn_2cout", "fwdbwd"): fwdbwd(flat, dy2, (x, wcat, bcat))}


def bn_cases(B, c, h, dtype, device, memory_format):
    x = torch.randn(B, c, h, h, device=device, dtype=dtype).contiguous(memory_format=memory_format)
    x.requires_grad_(True)
    gamma = (1 + 0.1 * torch.randn(B, c, device=device)).requires_grad_(True)
    beta = (0.1 * torch.randn(B, c, device=device)).requires_grad_(True)
    g1, b1 = gamma[0].detach().clone().requires_grad_(True), beta[0].detach().clone().requires_grad_(True)
    rm, rv = torch.zeros(c, device=device), torch.ones(c, device=device)
    dy = torch.randn_like(x)
    fused = lambda: hyper_batch_norm(x, gamma, beta, rm, rv, True, 0.1, 1e-5, impl="triton")  # --smoke: interpreter
    native = lambda: F.batch_norm(x, rm, rv, g1, b1, True, 0.1, 1e-5)

    def fwd(fn):
        def run():
            with torch.no_grad():
                return fn()
        return run

    return {("fused", "fwd"): fwd(fused), ("native_bn", "fwd"): fwd(native),
            ("fused", "fwdbwd"): lambda: torch.autograd.grad(fused(), (x, gamma, beta), dy),
            ("native_bn", "fwdbwd"): lambda: torch.autograd.grad(native(), (x, g1, b1), dy)}


# ----------------------------------------------------------------------------- main


def environment(device: str) -> dict:
    """This script's environment keys, from the package's one helper (hba_fast.run.environment)."""
    env = hba_environment(device)
    return {"device": env.get("gpu") or "cpu (TRITON_INTERPRET smoke)", "torch": env["torch"],
            "triton": env["triton"], "cuda": env["cuda"], "git_sha": env["git_sha"] or "unknown",
            "git_dirty": env["git_dirty"], "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def peaks(name: str) -> tuple[float | None, float | None]:
    return next(((tf, gb) for key, tf, gb in PEAKS if key in name), (None, None))


def measure_ceilings(bench, device: str, smoke: bool) -> tuple[float, float]:
    """(bf16 matmul TFLOP/s, device copy GB/s counting bytes read + written), measured here, on random data."""
    n, dtype = (256, torch.float32) if smoke else (8192, torch.bfloat16)
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    tflops = 2 * n**3 / bench(lambda: a @ b) / 1e9
    src = torch.randn((1 << 18) if smoke else (1 << 28), device=device)  # 1 GiB of fp32 on the GPU
    dst = torch.empty_like(src)
    gbs = 2 * src.numel() * src.element_size() / bench(lambda: dst.copy_(src)) / 1e6
    return tflops, gbs


def conv_floor_ms(B, cin, cout, h, k, s, p, elem: int, tflops: float, gbs: float) -> dict[str, float]:
    """Lower bounds on one hyper-conv's time from the measured ceilings (see the module docstring)."""
    ho = out_size(h, k, s, p)
    x, w, y = B * cin * h * h, cout * cin * k * k, B * cout * ho * ho
    flops = 4 * B * ho * ho * cout * cin * k * k
    fwd_bytes = elem * (x + 2 * w + 2 * y)
    bwd_bytes = elem * (y + x + 2 * w + y + x + 2 * w)
    return {"fwd": max(flops / tflops / 1e9, fwd_bytes / gbs / 1e6),
            "fwdbwd": max(3 * flops / tflops / 1e9, (fwd_bytes + bwd_bytes) / gbs / 1e6)}


def geomean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else float("nan")


def fmt_rate(value: float, peak: float | None) -> str:
    return f"{value:8.1f} ({100 * value / peak:4.1f}%)" if peak else f"{value:8.3g}      "


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nets", nargs="+", default=list(NETS), choices=list(NETS))
    ap.add_argument("--layout", default="channels_last", choices=["channels_last", "nchw"])
    ap.add_argument("--skip-bn", action="store_true", help="only the hyper-conv part")
    ap.add_argument("--skip-conv", action="store_true", help="only the hyper-BN part")
    ap.add_argument("--smoke", action="store_true",
                    help="tiny shapes on CPU under TRITON_INTERPRET; writes only to an explicit --out")
    ap.add_argument("--out", help=f"JSON lines file to append to (default {RESULTS.relative_to(ROOT)})")
    args = ap.parse_args(argv)
    if not args.smoke and not torch.cuda.is_available():
        print("bench_kernels.py needs a CUDA GPU (none found). Use --smoke to check that the script runs on CPU; "
              "it writes no numbers.", file=sys.stderr)
        return 2
    device = "cpu" if args.smoke else "cuda"
    dtype = torch.float32 if args.smoke else torch.bfloat16  # the interpreter computes in numpy: fp32
    memory_format = torch.channels_last if args.layout == "channels_last" else torch.contiguous_format
    env = environment(device)
    peak_tflops, peak_gbs = peaks(env["device"])
    bench = timer(args.smoke)
    ceil_tflops, ceil_gbs = measure_ceilings(bench, device, args.smoke)
    env["measured_tflops"], env["measured_gbs"] = round(ceil_tflops, 1), round(ceil_gbs, 1)
    out = None if args.smoke and not args.out else Path(args.out) if args.out else RESULTS
    extra = {"dtype": str(dtype), "layout": args.layout, **env, **({"smoke": True} if args.smoke else {})}
    records = Records(out, extra)
    print(f"# {env['device']}  torch {env['torch']}  triton {env['triton']}  cuda {env['cuda']}  {env['git_sha'][:10]}"
          f"  peak bf16 {peak_tflops} TFLOP/s, {peak_gbs} GB/s  dtype {dtype}  {args.layout}")
    print(f"# measured here: matmul {ceil_tflops:.1f} TFLOP/s, copy {ceil_gbs:.1f} GB/s (the floors use these)")
    for net in args.nets:
        batch, make = NETS[net]
        convs = make()
        counts = Counter(convs)
        shapes = smoke_shapes(convs) if args.smoke else list(counts)
        B = 2 if args.smoke else batch
        totals = Counter()
        ratios = {"fwd": [], "fwdbwd": []}  # per shape: (two_conv / fused, fused / cudnn_2cout)
        if not args.skip_conv:
            print(f"\n## {net} hyper-conv, batch {B}: ms and TFLOP/s (% of peak)")
            print(f"{'Cin':>5} {'Cout':>5} {'H':>4} {'k':>2} {'s':>2} {'n':>3} {'mode':>6} | "
                  f"{'fused':>24} | {'two_conv':>24} | {'cudnn_2cout':>24} | {'floor':>7} | "
                  "fused speed-up, x cudnn, x floor")
            for shape in shapes:
                cin, cout, h, k, s, p = shape
                ho = out_size(h, k, s, p)
                flops_fwd = 4 * B * ho * ho * cout * cin * k * k
                cases = conv_cases(B, cin, cout, h, k, s, p, dtype, device, memory_format)
                floor = conv_floor_ms(B, cin, cout, h, k, s, p, torch.tensor([], dtype=dtype).element_size(),
                                      ceil_tflops, ceil_gbs)
                for mode, flops in (("fwd", flops_fwd), ("fwdbwd", 3 * flops_fwd)):
                    ms = {impl: bench(cases[(impl, mode)]) for impl in ("fused", "two_conv", "cudnn_2cout")}
                    cells = " | ".join(f"{ms[i]:9.3f} {fmt_rate(flops / ms[i] / 1e9, peak_tflops)}" for i in ms)
                    print(f"{cin:5d} {cout:5d} {h:4d} {k:2d} {s:2d} {counts.get(shape, 1):3d} {mode:>6} | {cells} | "
                          f"{floor[mode]:7.3f} | {ms['two_conv'] / ms['fused']:5.2f}x, "
                          f"{ms['fused'] / ms['cudnn_2cout']:5.2f}x, {ms['fused'] / floor[mode]:5.2f}x")
                    ratios[mode].append((ms["two_conv"] / ms["fused"], ms["fused"] / ms["cudnn_2cout"]))
                    totals[("floor", mode)] += counts.get(shape, 1) * floor[mode]
                    for impl, t in ms.items():
                        totals[(impl, mode)] += counts.get(shape, 1) * t
                        records.append({"bench": "hyper_conv", "net": net, "batch": B, "cin": cin, "cout": cout,
                                        "h": h, "kernel": k, "stride": s, "padding": p, "count": counts.get(shape, 1),
                                        "mode": mode, "impl": impl, "ms": t, "tflops": flops / t / 1e9,
                                        "floor_ms": floor[mode]})
                del cases
            for mode in ("fwd", "fwdbwd"):
                f, t, c, fl = (totals[(i, mode)] for i in ("fused", "two_conv", "cudnn_2cout", "floor"))
                speedup, vs_cudnn = (geomean([r[i] for r in ratios[mode]]) for i in (0, 1))
                (g_two, _), (g_cudnn, _) = (target_goal(m, f"{net} {mode}") for m in
                                            ("kernel_speedup_vs_two_conv", "kernel_fused_over_cudnn"))
                print(f"# {net} all convs {mode}: fused {f:.2f} ms, two_conv {t:.2f} ms ({t / f:.2f}x), cudnn_2cout "
                      f"{c:.2f} ms (fused/cudnn {f / c:.2f}x), floor {fl:.2f} ms; geomean over shapes: speed-up vs "
                      f"two_conv {speedup:.2f}x (target >= {g_two}), fused/cudnn_2cout {vs_cudnn:.2f}x "
                      f"(target <= {g_cudnn})")
                records.append({"bench": "hyper_conv_net_total", "net": net, "batch": B, "mode": mode,
                                "fused_ms": f, "two_conv_ms": t, "cudnn_2cout_ms": c, "floor_ms": fl,
                                "geomean_speedup_vs_two_conv": speedup, "geomean_fused_over_cudnn": vs_cudnn})
                for metric, value in (("kernel_speedup_vs_two_conv", speedup), ("kernel_fused_over_cudnn", vs_cudnn)):
                    goal, cmp = target_goal(metric, f"{net} {mode}")
                    records.append({"bench": "hyper_conv_target", "net": net, "batch": B, "mode": mode,
                                    "metric": metric, "variant": f"{net} {mode}", "value": value, "goal": goal,
                                    "cmp": cmp})
        if not args.skip_bn:
            print(f"\n## {net} hyper-BN, batch {B}: ms and effective GB/s (% of peak)")
            bn_shapes = sorted({(c[1], out_size(c[2], c[3], c[4], c[5])) for c in (shapes if args.smoke else convs)})
            for c, h in bn_shapes:
                cases = bn_cases(B, c, h, dtype, device, memory_format)
                nbytes = B * c * h * h * torch.tensor([], dtype=dtype).element_size()
                for mode, passes in (("fwd", 2), ("fwdbwd", 5)):
                    ms = {impl: bench(cases[(impl, mode)]) for impl in ("fused", "native_bn")}
                    cells = " | ".join(f"{i} {ms[i]:8.3f} {fmt_rate(passes * nbytes / ms[i] / 1e6, peak_gbs)}"
                                       for i in ms)
                    print(f"C {c:5d} H {h:4d} {mode:>6} | {cells} | native/fused {ms['native_bn'] / ms['fused']:5.2f}x")
                    for impl, t in ms.items():
                        records.append({"bench": "hyper_bn", "net": net, "batch": B, "c": c, "h": h, "mode": mode,
                                        "impl": impl, "ms": t, "gbs": passes * nbytes / t / 1e6})
    if out is None:
        print(f"\n# smoke run: {len(records)} records computed, nothing written")
    else:
        print(f"\n# appended {len(records)} lines to {out}" + (" (smoke: code-path check)" if args.smoke else ""))
    return 0


class Records:
    """The run's JSON lines, each appended to `out` (None: kept in memory) as soon as it is measured."""

    def __init__(self, out: Path | None, extra: dict):
        self.out, self.extra, self.n = out, extra, 0
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)

    def append(self, rec: dict) -> None:
        self.n += 1
        if self.out is not None:
            with self.out.open("a") as f:
                f.write(json.dumps({**rec, **self.extra}) + "\n")

    def __len__(self) -> int:
        return self.n


if __name__ == "__main__":
    sys.exit(main())
