"""The Triton kernels compile for Hopper (sm_90) on a machine without a GPU, and the compiler keeps the properties
the design relies on. The interpreter (the other CPU tests) runs the kernels' arithmetic in numpy and accepts code
that the GPU compiler rejects; this compiles the real launches with the ptxas bundled in the triton wheel.

Checked per kernel, from `bench/compile_report.py --quick` (a subprocess: the report must run without
TRITON_INTERPRET): it compiles, fits the register file, the GEMM kernels use Hopper's warpgroup MMA (HGMMA), and
the forward's loads are 128-bit asynchronous copies (the software pipeliner overlaps them with the MMAs).
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _can_compile() -> str | None:
    try:
        import triton
        from triton.runtime.jit import create_function_from_signature  # noqa: F401
    except ImportError as e:
        return f"triton without the JIT binder this report uses: {e}"
    if not Path(triton.knobs.nvidia.cuobjdump.path).exists():
        return "triton wheel without cuobjdump"
    return None


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    reason = _can_compile()
    if reason:
        pytest.skip(reason)
    out = tmp_path_factory.mktemp("compile") / "report.jsonl"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "compile_report.py"), "--quick", "--json", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"compile report failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_every_kernel_compiles_for_sm90(report):
    kernels = {r["kernel"] for r in report}
    assert {"fwd", "dx", "dw", "dscale"} <= kernels
    assert sum(k.startswith("bn:") for k in kernels) == 6, kernels  # stats, finalize, fwd, bwd reduce/channel/dx
    for r in report:
        assert "error" not in r, r
        assert 0 < r["regs"] <= 255, r
        assert r["smem"] <= 227 * 1024, r  # Hopper's shared memory per block


def test_gemm_kernels_use_warpgroup_mma(report):
    for r in report:
        if r["kernel"] in ("fwd", "dx", "dw"):
            assert r["hgmma"] > 0, f"{r['case']} {r['kernel']}: no HGMMA (wgmma) instruction: {r}"


def test_forward_loads_are_wide_and_pipelined(report):
    fwd = [r for r in report if r["kernel"] == "fwd" and r["case"].startswith("3x3")]
    assert fwd
    for r in fwd:
        assert r["async"] > 0, f"forward not software-pipelined (no LDGSTS): {r}"
        assert r["ldg128"] >= 4 * r["narrow"], f"forward loads mostly narrow (alignment lost): {r}"
