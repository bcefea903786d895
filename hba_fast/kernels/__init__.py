"""Fused hyper-layer kernels (Triton), usable on their own: this package imports only torch and triton.

    hyper_conv2d(x, w0, wu, scale, bias0=None, biasu=None, stride=1, padding=0, dilation=1, impl="auto")
        y = conv(x, w0) + scale[:, :, None, None] * conv(x, wu) (+ bias0 + scale * biasu); scale (B, Cout)
    hyper_batch_norm(x, gamma, beta, running_mean, running_var, training, momentum, eps, impl="auto")
        batch norm with a per-sample affine: gamma, beta (B, C); running stats updated in place as torch does
    hyper_linear(x, w0, wu, scale, bias0=None, biasu=None)
        y = x w0^T + scale * (x wu^T) (+ bias0 + scale * biasu); scale (B, out) or (out,). Torch only: two
        F.linear and one addcmul; hyper_linear.py's docstring gives the FLOP/byte argument for not fusing it.

impl (one of IMPLS): "auto" runs Triton on CUDA float32/float16/bfloat16 tensors and the torch path otherwise;
"triton" forces the kernel (on CPU only under TRITON_INTERPRET=1; else TritonUnavailableError, naming the fix);
"torch" forces the pure-torch path. check_impl(impl) validates a value before use (e.g. in a config).

    target_multiprocessors(n)   context manager: launchers size split-K / split reductions as on a GPU with n
                                streaming multiprocessors (bench/compile_report.py: 132, an H100/H200, without a GPU)
    interpreting()              True under TRITON_INTERPRET=1, where the kernels run on the CPU

triton_support.py holds these and the single probe of `import triton`; one kernel per op file (hyper_conv.py,
hyper_bn.py), each with a reference, @triton.jit kernels, block-size heuristics, launchers, an autograd Function
and the public function.
"""
from .hyper_bn import hyper_batch_norm, hyper_batch_norm_ref
from .hyper_conv import hyper_conv2d, hyper_conv2d_ref
from .hyper_linear import hyper_linear, hyper_linear_ref
from .triton_support import IMPLS, TritonUnavailableError, check_impl, interpreting, target_multiprocessors

__all__ = [
    "IMPLS",
    "TritonUnavailableError",
    "check_impl",
    "hyper_batch_norm",
    "hyper_batch_norm_ref",
    "hyper_conv2d",
    "hyper_conv2d_ref",
    "hyper_linear",
    "hyper_linear_ref",
    "interpreting",
    "target_multiprocessors",
]
