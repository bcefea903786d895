"""The kernels' shared Triton support (hba_fast/kernels/triton_support.py): the impl decision table, its errors,
and the public grid-size knob the launchers' split heuristics consult. Metadata only: no kernel runs here."""
import pytest
import torch

from hba_fast.kernels import IMPLS, TritonUnavailableError, check_impl, target_multiprocessors
from hba_fast.kernels import hyper_bn as hbn
from hba_fast.kernels import hyper_conv as hc
from hba_fast.kernels import triton_support as ts
from hba_fast.models import layers as hyper


def test_impls_are_one_tuple_and_checked_with_the_fix():
    assert IMPLS == ("auto", "triton", "torch") and hyper.IMPLS is IMPLS
    for impl in IMPLS:
        check_impl(impl)
    with pytest.raises(ValueError, match=r"hyper_x: impl must be one of \('auto', 'triton', 'torch'\).*got 'cuda'"):
        check_impl("cuda", "hyper_x")


@pytest.mark.parametrize("interpret", ["1", "0"])
def test_use_triton_decision_table_on_cpu(monkeypatch, interpret):
    monkeypatch.setenv("TRITON_INTERPRET", interpret)
    x = torch.zeros(2, 3)
    assert ts.use_triton("torch", x, "op") is False
    assert ts.use_triton("auto", x, "op") is False  # auto never runs the interpreter
    if ts.triton is None:
        pytest.skip("triton is not installed")
    if interpret == "1":
        assert ts.use_triton("triton", x, "op") is True
    else:
        with pytest.raises(TritonUnavailableError, match=r"op\(impl='triton'\) needs CUDA tensors.*TRITON_INTERPRET=1"):
            ts.use_triton("triton", x, "op")
    with pytest.raises(ValueError, match="impl must be one of"):
        ts.use_triton("cudnn", x, "op")


def test_unavailable_error_is_both_former_types():
    assert issubclass(TritonUnavailableError, RuntimeError) and issubclass(TritonUnavailableError, ValueError)


def test_target_multiprocessors_sizes_the_split_heuristics():
    """Off CUDA there is no split-K and batch norm aims at 4 programs; inside the knob both size for the GPU,
    whatever the device, and leaving it (or an error inside) restores the device's own answer."""
    cpu, meta = torch.device("cpu"), torch.device("meta")
    m = 128 * 32 * 32
    assert ts.multiprocessors(cpu) is None and hc._dw_split(m, 4, cpu) == m and hbn._num_programs_target(cpu) == 4
    with target_multiprocessors(132):
        assert ts.multiprocessors(meta) == 132 and hbn._num_programs_target(cpu) == 4 * 132
        assert hc._dw_split(m, 4, meta) == 2048  # min(2 * 132 // 4, m / 1024) = 66 wanted: 2048-row chunks
        with target_multiprocessors(8):
            assert hc._dw_split(m, 4, cpu) == m // 4  # 2 * 8 // 4 = 4 splits
        assert ts.multiprocessors(cpu) == 132
    with pytest.raises(RuntimeError), target_multiprocessors(16):
        raise RuntimeError
    assert ts.multiprocessors(cpu) is None
    with pytest.raises(ValueError, match="positive int"), target_multiprocessors(0):
        pass
