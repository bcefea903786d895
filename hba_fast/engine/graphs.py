"""How the trainer's round runs: eagerly, or captured once into a CUDA graph and replayed; and torch.compile.

    train.graphs  auto | on | off   `use_graphs`: auto = on with CUDA. `on` without CUDA runs the same
                                    capture-ready round eagerly and says so once in the log.
    train.compile off | default | max-autotune   `compile_model`: torch.compile of the model (forward and, through
                                    AOTAutograd, backward), usable with or without graphs. max-autotune leaves out
                                    inductor's own CUDA graphs (mode "max-autotune-no-cudagraphs"): train.graphs
                                    captures the whole round, compiled model included.

`RoundRunner(fn, t_train, t_val, device, graphs, generators).run(n_weight, n_hyper)` calls the round function
`fn(n_weight, n_hyper)` (trainer.py: weight steps then hyper steps, from static buffers only, no host sync):
- a partial round (an epoch's first or last when steps_per_epoch is not a multiple of t_train) runs eagerly;
- without graphs every round runs eagerly: the same function, so eager and graph runs share one implementation;
- with graphs, the first WARMUP_ROUNDS full rounds run eagerly on a side stream (one per runner; the caching
  allocator settles, cuDNN's benchmark picks its algorithms, Triton's autotuner times its configs, the optimisers
  create their state), the next full round is captured once into a `torch.cuda.CUDAGraph` and every full round
  after it is one replay. Capture records kernels, it does not run them: the capturing round is then replayed, so
  every round trains. Two round shapes recur: (t_train, t_val), and (t_train, 0) in the first
  train.hyper_warmup_epochs epochs (no hyper steps yet); they come one phase after the other, so the runner keeps
  one graph, of the shape in use: when the shape changes (the hyper steps start) it drops the graph (and its
  memory pool), warms up and captures the new shape.
  Random numbers: the round draws from the generators its feed names (the augmentation's, the sampler's), each
  registered with the graph (`CUDAGraph.register_generator_state`), and from the default CUDA generator wherever
  the model draws (dropout, drop-path: torchvision:/timm: models), which torch registers with every graph itself.
  Each replay advances every registered generator's Philox offset by what the captured round consumed, as an eager
  round does: replays draw fresh numbers, the same ones eager rounds would, and the generators' states stay exact
  for checkpoints.
- `reset()` drops the graph; the trainer calls it after loading a checkpoint (the optimisers' state tensors are
  new objects then, which a graph would not see), so the graph is rebuilt after a resume.
Capture uses `capture_error_mode="thread_local"`, so threads of a data pipeline running beside it do not break it.

`enable_cudnn_benchmark(device)`: cudnn.benchmark on CUDA (the round's shapes are static: fixed batch and size).
References: PyTorch "CUDA Graphs" notes (whole-network capture, warm-up on a side stream, Philox offsets).
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

GRAPHS = ("auto", "on", "off")
COMPILE = ("off", "default", "max-autotune")
COMPILE_OPTIONS = {"default": {"mode": "default"}, "max-autotune": {"mode": "max-autotune-no-cudagraphs"}}
WARMUP_ROUNDS = 3  # eager full rounds before the capture (torch's notes advise a few)


def use_graphs(setting: str, device: torch.device, log: Callable[[str], None] = print) -> bool:
    """train.graphs -> whether to capture the round in a CUDA graph (module docstring)."""
    if setting not in GRAPHS:
        raise ValueError(f"train.graphs must be one of {GRAPHS}, got {setting!r}")
    if setting == "on" and device.type != "cuda":
        log(f"train.graphs=on needs CUDA: running the same capture-ready round eagerly on {device}")
    return setting != "off" and device.type == "cuda"


def compile_model(model: nn.Module, setting: str) -> Callable:
    """train.compile -> the callable the round runs the model through (the model itself when off)."""
    if setting not in COMPILE:
        raise ValueError(f"train.compile must be one of {COMPILE}, got {setting!r}")
    if setting == "off":
        return model
    return torch.compile(model, dynamic=False, **COMPILE_OPTIONS[setting])


def enable_cudnn_benchmark(device: torch.device) -> bool:
    """cudnn.benchmark on CUDA, where the round's shapes are static; True when set."""
    if device.type != "cuda":
        return False
    torch.backends.cudnn.benchmark = True
    return True


class RoundRunner:
    """Runs the round function eagerly, or as warm-up rounds, one capture and replays (module docstring)."""

    def __init__(self, fn: Callable[[int, int], None], t_train: int, t_val: int, device: torch.device,
                 graphs: bool, generators: list[torch.Generator] = ()):
        assert not graphs or device.type == "cuda", "CUDA graphs need a CUDA device (use_graphs decides)"
        self.fn, self.full, self.device, self.graphs = fn, (t_train, t_val), device, graphs
        self.recurring = {(t_train, t_val), (t_train, 0)}  # with and without hyper steps (train.hyper_warmup_epochs)
        self.generators = [g for g in generators if g.device.type == "cuda"]
        self.shape = self.full  # the round shape of `graph` and of the warm-up under way
        self.graph: torch.cuda.CUDAGraph | None = None
        self.warm = 0  # full rounds run since the last (re)start, before the capture
        self.side: torch.cuda.Stream | None = None  # the warm-up rounds' stream, made at the first, then reused

    def reset(self) -> None:
        """Forget the graph (and the warm-up): the next full rounds warm up and capture again (on the same side
        stream)."""
        self.graph, self.warm = None, 0

    def run(self, n_weight: int, n_hyper: int) -> None:
        if not self.graphs or (n_weight, n_hyper) not in self.recurring:
            self.fn(n_weight, n_hyper)
            return
        if (n_weight, n_hyper) != self.shape:  # a new phase (the hyper steps start): capture its shape
            self.reset()
            self.shape = (n_weight, n_hyper)
        if self.graph is None:
            if self.warm < WARMUP_ROUNDS:
                self._warm_up()
                return
            self.graph = self._capture()
        self.graph.replay()

    def _warm_up(self) -> None:
        if self.side is None:
            self.side = torch.cuda.Stream(self.device)
        main = torch.cuda.current_stream(self.device)
        self.side.wait_stream(main)  # after the feed's copies for this round
        with torch.cuda.stream(self.side):
            self.fn(*self.shape)
        main.wait_stream(self.side)
        self.warm += 1

    def _capture(self) -> torch.cuda.CUDAGraph:
        graph = torch.cuda.CUDAGraph()
        for generator in self.generators:
            graph.register_generator_state(generator)
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            self.fn(*self.shape)
        return graph
