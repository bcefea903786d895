"""Issue 12's performance targets: the one table bench/summarize.py judges by, and the goal the benchmark scripts
write into their target rows (`goal(metric)`), so a goal is stated once.

    metric                      variant                    goal   what (measured on the GPU)
    round_ratio                 "<strategy> <mode>"        1.35   search round / plain step per training image,
                                                           1.8    first_bn / conv+bn (bench_round.py)
    graphs_speedup              "<strategy>"               1.3    images/s with CUDA graphs / eager, WRN-40-2 b128
    search_wall_s               "reduced CIFAR-10"         30     wall s of configs/cifar10-reduced.yaml (200 epochs)
    policy_share                "<form>"                   0.05   the policy's time / a WRN-40-2 step at batch 128
    kernel_speedup_vs_two_conv  "<net> <mode>"             1.5    fused hyper-conv vs two convs (geomean of shapes)
    kernel_fused_over_cudnn     "<net> <mode>"             1.15   fused hyper-conv / one cuDNN conv of 2*Cout outputs
    kernel_bn_over_native       "<net> <mode>"             1.2    Triton hyper-BN / torch's native batch norm
    gpu_tests_failed            None                       0      failed GPU tests (the suite's tests stage)
    soak_cuda_peak_growth_mib   None                       1      growth of torch.cuda.max_memory_allocated over the
                                                                  epochs of a soak (bench/soak.py), MiB
    soak_rss_growth_mib         None                       10     resident memory growth, round 100 -> the last (also
                                                                  asserted on the CPU by tests/test_soak.py)
    soak_fd_growth              None                       0      open file descriptors, round 100 -> the last
"""
from __future__ import annotations

from typing import NamedTuple


class Target(NamedTuple):
    metric: str
    variant: str | None  # None: the metric has one row
    label: str  # what the summary table prints
    goal: float
    cmp: str  # "<=" or ">="


SOAK_RSS_MIB = 10.0  # resident memory growth allowed after warm-up (bench/soak.py, tests/test_soak.py)
ROUND_RATIO = {"first_bn": 1.35, "conv+bn": 1.8}  # search round / plain step per training image, by strategy
KERNEL_GOALS = (("kernel_speedup_vs_two_conv", "hyper-conv speed-up vs two convs", 1.5, ">="),
                ("kernel_fused_over_cudnn", "hyper-conv / cuDNN 2*Cout conv", 1.15, "<="),
                ("kernel_bn_over_native", "hyper-BN / native BN", 1.2, "<="))
NETS, MODES = ("wrn-40-2", "wrn-28-10"), ("fwd", "fwdbwd")

# the targets, in the order the summary prints them
TARGETS: list[Target] = [
    *[Target("policy_share", form, f"policy / WRN-40-2 step, b128 [{what}]", 0.05, "<=")
      for form, what in (("static", "static, eager"), ("static graph", "static, CUDA graph"),
                         ("static torch", "static, torch ops"), ("indexed", "indexed"))],
    *[Target("round_ratio", f"{s} {m}", f"search round / plain step per image [{s}, {m}]", goal, "<=")
      for s, goal in ROUND_RATIO.items() for m in ("eager", "graphs", "compile")],
    *[Target("graphs_speedup", s, f"graphs vs eager, WRN-40-2 b128 [{s}]", 1.3, ">=")
      for s in ("none", "first_bn", "conv+bn")],
    Target("search_wall_s", "reduced CIFAR-10", "reduced CIFAR-10 search, wall s [WRN-40-2, 200 epochs]", 30.0, "<="),
    *[Target(metric, f"{net} {mode}", f"{label} [{net} {mode}]", goal, cmp)
      for net in NETS for mode in MODES for metric, label, goal, cmp in KERNEL_GOALS],
    Target("gpu_tests_failed", None, "GPU tests failed (pytest -m 'gpu and not slow')", 0, "<="),
    Target("soak_cuda_peak_growth_mib", None, "soak: CUDA peak memory growth over epochs, MiB", 1.0, "<="),
    Target("soak_rss_growth_mib", None, "soak: resident memory growth after round 100, MiB", SOAK_RSS_MIB, "<="),
    Target("soak_fd_growth", None, "soak: open file descriptors growth after round 100", 0, "<="),
]


def goal(metric: str, variant: str | None = None) -> tuple[float, str]:
    """(goal, cmp) of a target, for the rows a script writes: the variant's own, else the metric's first (a variant
    the summary does not list, e.g. policy_share of the DALI form); KeyError for a metric with no target."""
    of_metric = [t for t in TARGETS if t.metric == metric]
    if not of_metric:
        raise KeyError(f"no target for metric {metric!r} in bench/targets.py")
    t = next((t for t in of_metric if t.variant == variant), of_metric[0])
    return t.goal, t.cmp
