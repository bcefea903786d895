"""The trainer's capture-ready round (trainer.py, graphs.py, pipelines/round_feed.py), on the CPU:

- it makes no host sync: the sync methods are patched and counted over whole rounds (feed preparation included);
  only the documented log-interval reads happen between rounds;
- it reproduces the trainer as it was before the round existed (per-step Python lr, batches from the pipeline's
  iterators with the indexed policy): same losses, same lambda trajectory within 1e-6; the fused optimisers it
  now uses agree with the plain ones within 1e-6 per step;
- a run killed after an epoch resumes bit-identically with train.graphs=on (eager here);
- train.graphs / train.compile switches and their messages; the runner's warm-up, capture and replay protocol
  (with a stand-in for torch.cuda); the feeds give identical batches (device gather, host staging, staged batches).
GPU tests (marked gpu) check graph replays against eager rounds on WRN-40-2 at batch 128 in bf16 and fp32, capture
with the Triton kernels, resume with graphs, and that eager rounds pass torch's sync debug mode.
"""
from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
import types

import pytest
import torch
import torch.nn.functional as F

from hba_fast.augment.space import SearchSpace
from hba_fast.config import DataConfig, OptimConfig, TrainConfig
from hba_fast.data.datasets import load_splits
from hba_fast.data.round_feed import HostStager, StagedFeed
from hba_fast.data.torch_pipeline import TorchPipeline
from hba_fast.engine import graphs
from hba_fast.engine.hyperparams import Hyperparams
from hba_fast.engine.trainer import Trainer, hyper_bn_mode, lr_factor
from hba_fast.models import build_model
from hba_fast.run.session import Run
from hba_fast.schedule.file import Schedule
from hba_fast.schedule.sampler import ScheduleSampler

GPU = torch.cuda.is_available()


# ---------------------------------------------------------------- set-up: real pipeline, small model

def _data_cfg(**kw) -> DataConfig:
    base = {"dataset": "shapes10", "image_size": 16, "num_train": 24, "num_val": 16, "num_test": 16, "batch_size": 8,
            "recipe": "cifar", "backend": "torch"}
    return DataConfig(**{**base, **kw})


def _build(tmp_path, strategy="first_bn", model="wrn-16-2", device="cpu", data=None, schedule=False, **train):
    """A search (or, with strategy none, a plain run with a fixed schedule) on generated images; seeded."""
    data = data or _data_cfg()
    torch.manual_seed(0)
    splits = load_splits(data)
    device = torch.device(device)
    hyper = None
    if strategy != "none":
        hyper = Hyperparams(SearchSpace(), 1.0, 0.05, device, generator=torch.Generator(device).manual_seed(3))
        sampler = hyper.sampler
    else:
        probs = torch.linspace(0.1, 0.9, 30).repeat(4, 1)  # (4 epochs, 30): a schedule that changes every epoch
        mags = torch.tensor([0.2, 0.2, 0.3, 0.3, 20.0, 0, 0, 0, 100.0, 4.0, 1.5, 0.5, 1.2, 1.7, 0.1] * 2)
        sampler = ScheduleSampler(Schedule(probs * torch.tensor([[1.0], [0.5], [0.9], [0.2]]), mags.repeat(4, 1)), 4)
    pipe = TorchPipeline(data, splits, sampler, device, seed=5)
    net = build_model(model, splits.num_classes, strategy).to(device)
    cfg = TrainConfig(**{"epochs": 2, "t_val": 1 if hyper is not None else 0, "log_every": 1, "eval_every": 0,
                         "hyper_warmup_epochs": 0, **train})
    optim = OptimConfig(lr=0.05, warmup_epochs=0.5, hyper_lr=0.05)
    return Trainer(net, pipe, Run.local(tmp_path, device), optim, cfg, hyper)


def _record(trainer):
    """Losses of every step and lambda after every hyper step, recorded on the device inside the round."""
    losses, lams = [], []
    loss_fn = trainer._loss

    def loss(*args):
        value = loss_fn(*args)
        losses.append(value.detach().clone())
        return value

    trainer._loss = loss
    if trainer.hyper.lam is not None:
        step = trainer.hyper.step

        def hyper_step(*args):
            step(*args)
            lams.append(trainer.hyper.lam.detach().clone())

        trainer.hyper.step = hyper_step
    return losses, lams


# ---------------------------------------------------------------- no host sync inside a round

_SYNC_METHODS = ("item", "tolist", "cpu", "numpy", "__bool__", "__int__", "__float__", "__index__", "nonzero",
                 "unique", "masked_select", "argwhere")


@contextlib.contextmanager
def count_host_syncs(phase):
    """Count calls that read the device from the host (on a GPU: a sync), attributed to `phase()` at call time.

    Patched: the Tensor methods in _SYNC_METHODS, torch.nonzero / unique / masked_select / argwhere, one-argument
    torch.where, indexing with a boolean mask (data-dependent shape), torch.cuda.synchronize."""
    counts: dict[str, list[str]] = {}
    saved = []

    def hit(name):
        counts.setdefault(phase(), []).append(name)

    def wrap(owner, name, check=None):
        original = getattr(owner, name)
        saved.append((owner, name, original))

        def patched(*args, **kwargs):
            if check is None or check(*args, **kwargs):
                hit(f"{getattr(owner, '__name__', owner)}.{name}")
            return original(*args, **kwargs)

        setattr(owner, name, patched)

    def boolean_index(self, index, *rest):
        items = index if isinstance(index, tuple) else (index,)
        return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in items)

    for name in _SYNC_METHODS:
        wrap(torch.Tensor, name)
    for name in ("nonzero", "unique", "masked_select", "argwhere"):
        wrap(torch, name)
    wrap(torch, "where", lambda *a, **k: len(a) + len(k) == 1)
    wrap(torch.Tensor, "__getitem__", boolean_index)
    wrap(torch.Tensor, "__setitem__", boolean_index)
    wrap(torch.cuda, "synchronize")
    try:
        yield counts
    finally:
        for owner, name, original in reversed(saved):
            setattr(owner, name, original)


@pytest.mark.parametrize("strategy", ["first_bn", "none"])
def test_rounds_make_no_host_sync(tmp_path, strategy):
    """Whole fit: inside every round (feed preparation, gathers, policy, recipe, forward, backward, SGD, Adam, NaN
    tracking, meters) not one host read; between rounds only the log interval's reads."""
    tr = _build(tmp_path, strategy, graphs="on", log_every=2, epochs=2)
    where = ["other"]

    def within(name, fn):
        def run(*a, **k):
            outer, where[0] = where[0], name
            try:
                return fn(*a, **k)
            finally:
                where[0] = outer
        return run

    tr.run_round = within("round", tr.run_round)
    tr._log_interval = within("log", tr._log_interval)
    tr._end_epoch = within("epoch", tr._end_epoch)
    tr._start_epoch = within("epoch", tr._start_epoch)
    logs = []
    log_interval = tr._log_interval
    tr._log_interval = lambda ips: logs.append(ips) or log_interval(ips)
    rounds = []
    run_round = tr.run_round
    tr.run_round = lambda n, m: rounds.append((n, m)) or run_round(n, m)
    with count_host_syncs(lambda: where[0]) as counts:
        tr.fit()
    assert tr.step == 6 and len(rounds) == 4  # 3 steps per epoch, t_train=2: (2,1) (1,0) | (1,1) (2,1)
    assert counts.get("round", []) == [], f"host syncs inside the round: {counts['round']}"
    assert counts.get("other", []) == [], f"host syncs between rounds: {counts['other']}"
    assert len(counts["log"]) == len(logs)  # NaN check, lr and both meters: one read per log line


def test_nan_in_a_hyper_step_is_reported_as_that_hyper_step(tmp_path):
    """Only the validation batches are NaN: the error names the hyper step after the epoch's last weight step (not
    the next weight step, step 4 of an epoch of 3)."""
    from hba_fast.data.base import Batch
    from hba_fast.errors import NonFiniteLossError

    tr = _build(tmp_path, t_train=3, epochs=2)  # 3 steps per epoch: one round (3, 1)
    val_batch = tr.feed.val_batch
    tr.feed.val_batch = lambda j: (lambda b: Batch(b.images * float("nan"), b.labels, b.lam))(val_batch(j))
    with pytest.raises(NonFiniteLossError) as e:
        tr.fit()
    assert "in the hyper step after weight step 3 (step 3 of epoch 1/2); the run stopped" in str(e.value), e.value
    assert "before any update" not in str(e.value)


# ---------------------------------------------------------------- the same numbers as the trainer before rounds

def _legacy_fit(tr):
    """The trainer's loop before the sync-free round: Python lr set per step, batches from the pipeline's iterators
    (indexed policy), a hyper step after every t_train-th weight step of the run. The optimisers are of the kinds
    the trainer now uses (fused SGD, fused Adam on the CPU), batch norm in the mode train.hyper_bn sets: HBA's
    policy draws are discrete (a probability against a uniform number, a magnitude rounded to pixels), so a last-bit
    difference in lambda can change a later draw and the trajectories part;
    `test_fused_optimisers_match_the_plain_ones` bounds that substitution on its own.
    Returns (losses, lambda after each hyper step)."""
    cfg, optim, model, hyper = tr.cfg, tr.optim_cfg, tr.model, tr.hyper
    opt = torch.optim.SGD(model.parameters(), lr=optim.lr, momentum=optim.momentum, nesterov=optim.nesterov,
                          weight_decay=optim.weight_decay, fused=True)
    adam = None if hyper.lam is None else torch.optim.Adam([hyper.lam], lr=optim.hyper_lr, fused=True)
    losses, lams, step, spe = [], [], 0, tr.steps_per_epoch
    for epoch in range(cfg.epochs):
        model.train()
        for batch in itertools.islice(tr.pipeline.train_epoch(epoch), spe):
            for group in opt.param_groups:
                group["lr"] = optim.lr * lr_factor(optim, step / spe, cfg.epochs)
            loss = F.cross_entropy(model(batch.images, batch.lam).float(), batch.labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.detach())
            step += 1
            if step % cfg.t_train == 0:
                for _ in range(cfg.t_val):
                    val = tr.pipeline.val_batch()
                    with hyper_bn_mode(model, cfg.hyper_bn):
                        vloss = F.cross_entropy(model(val.images, hyper.lam).float(), val.labels)
                    (grad,) = torch.autograd.grad(vloss, [hyper.lam])
                    hyper.lam.grad = grad
                    adam.step()
                    adam.zero_grad(set_to_none=True)
                    losses.append(vloss.detach())
                    lams.append(hyper.lam.detach().clone())
    return losses, lams


@pytest.mark.parametrize("strategy", ["first_bn", "none"])
def test_round_reproduces_the_trainer_before_it(tmp_path, strategy):
    """fp32, 2 epochs of 3 steps with t_train=2 (rounds straddle the epoch boundary), lr warm-up then cosine; a
    search (first_bn) and plain training with a schedule that changes every epoch (none). The batches are the same
    (static and indexed policy forms draw the same numbers), the lr the same, the optimisers of one kind: stated
    tolerance 1e-6 on losses, lambda and weights (measured here: exactly equal)."""
    new = _build(tmp_path / "new", strategy, graphs="on")
    losses, lams = _record(new)
    new.fit()
    old = _build(tmp_path / "old", strategy)
    old_losses, old_lams = _legacy_fit(old)
    assert len(losses) == len(old_losses) == 6 + (3 if strategy != "none" else 0)  # weight and hyper steps, in order
    torch.testing.assert_close(torch.stack(losses), torch.stack(old_losses), rtol=1e-6, atol=1e-6)
    assert len(lams) == len(old_lams)
    for a, b in zip(lams, old_lams):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    if lams:
        assert (lams[-1] - SearchSpace().init_lam()).abs().max() > 0.05  # lambda really moved
    for (name, p), q in zip(new.model.named_parameters(), old.model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-6, msg=name)


def test_fused_optimisers_match_the_plain_ones():
    """The trainer's optimiser kinds against the plain ones it replaced, several steps on the same gradients: SGD
    fused with a tensor lr (set per step) vs plain SGD with a float lr; Adam fused (CPU) vs plain. Within 1e-6."""
    torch.manual_seed(0)
    params = [torch.randn(64, 32), torch.randn(54)]
    grads = [[torch.randn_like(p) for p in params] for _ in range(5)]
    for kind in ("sgd", "adam"):
        a, b = [p.clone().requires_grad_() for p in params], [p.clone().requires_grad_() for p in params]
        if kind == "sgd":
            lr = torch.tensor(0.05)
            fused = torch.optim.SGD(a, lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-4, fused=True)
            plain = torch.optim.SGD(b, lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
        else:
            fused, plain = torch.optim.Adam(a, lr=0.05, fused=True), torch.optim.Adam(b, lr=0.05)
        for i, g in enumerate(grads):
            if kind == "sgd":
                lr.fill_(0.05 * (1 - i / 10))
                plain.param_groups[0]["lr"] = 0.05 * (1 - i / 10)
            for p, q, gi in zip(a, b, g):
                p.grad, q.grad = gi.clone(), gi.clone()
            fused.step()
            plain.step()
        for p, q in zip(a, b):
            torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------- resume with graphs on

def test_resume_after_a_kill_is_bit_identical_with_graphs_on(tmp_path):
    straight = _build(tmp_path / "a", graphs="on")
    straight.fit()

    class Killed(Exception):
        pass

    first = _build(tmp_path / "b", graphs="on")
    end_epoch = first._end_epoch

    def end_epoch_then_die(images_per_s):
        end_epoch(images_per_s)  # writes the checkpoint
        raise Killed

    first._end_epoch = end_epoch_then_die
    with pytest.raises(Killed):
        first.fit()
    resumed = _build(tmp_path / "c", graphs="on")
    torch.manual_seed(123)  # the resumed process starts from other RNG states
    assert resumed.resume(tmp_path / "b" / "checkpoint.pt") and resumed.epoch == 1
    resumed.fit()
    assert resumed.step == straight.step == 6
    assert torch.equal(resumed.hyper.lam.detach(), straight.hyper.lam.detach())
    for k, v in straight.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[k], v), k
    assert resumed.schedule == straight.schedule


# ---------------------------------------------------------------- switches

def test_graph_and_compile_switches(tmp_path, monkeypatch):
    said = []
    assert graphs.use_graphs("on", torch.device("cpu"), said.append) is False
    assert said == ["train.graphs=on needs CUDA: running the same capture-ready round eagerly on cpu"]
    assert not graphs.use_graphs("auto", torch.device("cpu"), said.append) and len(said) == 1  # auto: quietly off
    assert not graphs.use_graphs("off", torch.device("cpu"), said.append)
    assert graphs.use_graphs("auto", torch.device("cuda", 0), said.append)
    assert graphs.use_graphs("on", torch.device("cuda", 0), said.append) and len(said) == 1
    with pytest.raises(ValueError, match="train.graphs must be one of"):
        graphs.use_graphs("yes", torch.device("cpu"))
    model = torch.nn.Linear(2, 2)
    assert graphs.compile_model(model, "off") is model
    with pytest.raises(ValueError, match="train.compile must be one of"):
        graphs.compile_model(model, "fast")
    assert graphs.COMPILE_OPTIONS["max-autotune"] == {"mode": "max-autotune-no-cudagraphs"}

    tr = _build(tmp_path / "log", graphs="on")
    text = (tmp_path / "log" / "log.txt").read_text()
    assert "train.graphs=on needs CUDA" in text and "eager; torch.compile off" in text
    assert tr.rounds.graphs is False and tr.forward is tr.model


def test_compile_runs_the_same_round(tmp_path, monkeypatch):
    """train.compile wires torch.compile into the round (backend 'eager' here: the wiring, not inductor's speed;
    tests/test_kernels_custom_ops.py compiles the hyper-layers through AOTAutograd): the compiled round, with no graph
    break in the model (fullgraph), gives the eager round's numbers."""
    monkeypatch.setitem(graphs.COMPILE_OPTIONS, "default", {"backend": "eager", "fullgraph": True})
    torch._dynamo.reset()
    compiled = _build(tmp_path / "c", "first_conv", compile="default", epochs=1)
    assert isinstance(compiled.forward, torch._dynamo.eval_frame.OptimizedModule)
    losses, lams = _record(compiled)
    compiled.fit()
    eager = _build(tmp_path / "e", "first_conv", epochs=1)
    eager_losses, eager_lams = _record(eager)
    eager.fit()
    torch.testing.assert_close(torch.stack(losses), torch.stack(eager_losses), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(torch.stack(lams), torch.stack(eager_lams), rtol=0, atol=1e-5)


def test_config_fields_and_yaml_words(tmp_path):
    from hba_fast.config import load_config
    from hba_fast.errors import ConfigError

    cfg = load_config(None, ["train.graphs=off", "train.compile=max-autotune"])  # YAML reads off as false
    assert (cfg.train.graphs, cfg.train.compile) == ("off", "max-autotune")
    assert load_config(None, ["train.graphs=on"]).train.graphs == "on"
    assert (TrainConfig().graphs, TrainConfig().compile) == ("auto", "off")
    with pytest.raises(ConfigError, match=r"train.compile='max_autotune' is not valid \(did you mean 'max-autotune'"):
        load_config(None, ["train.compile=max_autotune"])


# ---------------------------------------------------------------- rounds, runner protocol

def test_rounds_of_an_epoch_follow_the_global_step():
    def rounds(step, spe, t_train, t_val=1):
        tr = types.SimpleNamespace(step=step, steps_per_epoch=spe, epoch=step // spe,
                                   cfg=types.SimpleNamespace(t_train=t_train, t_val=t_val, hyper_warmup_epochs=0))
        return list(Trainer.rounds_of_epoch(tr))

    assert rounds(0, 3, 2) == [(2, 1), (1, 0)]
    assert rounds(3, 3, 2) == [(1, 1), (2, 1)]
    assert rounds(0, 31, 2)[-1] == (1, 0) and rounds(31, 31, 2)[0] == (1, 1)
    assert rounds(0, 4, 1, 2) == [(1, 2)] * 4
    assert rounds(5, 4, 3) == [(1, 1), (3, 1)]
    for spe, t in ((31, 2), (7, 3), (10, 5)):  # as many hyper steps as the old rule: one per t_train steps
        hyper = sum(h for e in range(4) for _, h in rounds(e * spe, spe, t))
        assert hyper == (4 * spe) // t


class _FakeCuda:
    """Enough of torch.cuda for RoundRunner's protocol on a CPU: records stream use, captures and replays."""

    def __init__(self):
        self.capturing = False
        self.graphs = []
        self.events = []
        fake = self

        class Graph:
            def __init__(self):
                self.registered, self.replays = [], 0
                fake.graphs.append(self)

            def register_generator_state(self, g):
                self.registered.append(g)

            def replay(self):
                self.replays += 1
                fake.events.append("replay")

        class Stream:
            def __init__(self, device=None):
                fake.streams += 1

            def wait_stream(self, other):
                fake.events.append("wait")

        @contextlib.contextmanager
        def graph(g, capture_error_mode="global"):
            assert capture_error_mode == "thread_local"
            self.capturing = True
            yield
            self.capturing = False

        @contextlib.contextmanager
        def stream(s):
            fake.events.append("side")
            yield

        self.CUDAGraph, self.Stream, self.graph, self.stream = Graph, Stream, graph, stream
        self.streams = 0
        main = Stream()
        self.streams = 0  # side streams made (the main one above not counted)
        self.current_stream = lambda device=None: main


def test_runner_warms_up_captures_once_and_replays(monkeypatch):
    fake = _FakeCuda()
    for name in ("CUDAGraph", "Stream", "graph", "stream", "current_stream"):
        monkeypatch.setattr(torch.cuda, name, getattr(fake, name))
    calls = []
    runner = graphs.RoundRunner(lambda n, m: calls.append((n, m, fake.capturing)), 2, 1, torch.device("cuda", 0),
                                True, [types.SimpleNamespace(device=torch.device("cuda", 0)),
                                       types.SimpleNamespace(device=torch.device("cpu"))])
    for n, m in [(2, 1)] * 3 + [(1, 0)] + [(2, 1)] * 4:
        runner.run(n, m)
    assert calls == [(2, 1, False)] * 3 + [(1, 0, False), (2, 1, True)]  # 3 warm-ups, a partial round, 1 capture
    assert len(fake.graphs) == 1 and fake.graphs[0].replays == 4  # the capturing round is replayed too
    assert [g.device.type for g in fake.graphs[0].registered] == ["cuda"]  # only CUDA generators are registered
    assert fake.events.count("side") == 3  # warm-up rounds run on a side stream
    side = runner.side
    assert side is not None
    runner.reset()
    for _ in range(5):
        runner.run(2, 1)
    assert len(calls) == 5 + 4 and len(fake.graphs) == 2  # after reset (a resume): warm-up and capture again
    assert runner.side is side and fake.streams == 1  # one side stream per runner, made once
    off = graphs.RoundRunner(lambda n, m: calls.append((n, m, None)), 2, 1, torch.device("cpu"), False)
    off.run(2, 1)
    assert calls[-1] == (2, 1, None)


def test_runner_captures_the_warm_up_epochs_rounds_too(monkeypatch):
    """train.hyper_warmup_epochs: whole rounds without hyper steps, then with them; each phase is captured and
    replayed in its turn (one graph at a time), partial rounds stay eager."""
    fake = _FakeCuda()
    for name in ("CUDAGraph", "Stream", "graph", "stream", "current_stream"):
        monkeypatch.setattr(torch.cuda, name, getattr(fake, name))
    calls = []
    runner = graphs.RoundRunner(lambda n, m: calls.append((n, m, fake.capturing)), 2, 1, torch.device("cuda", 0),
                                True)
    for n, m in [(2, 0)] * 5 + [(1, 0)] + [(2, 1)] * 5:
        runner.run(n, m)
    assert calls == ([(2, 0, False)] * 3 + [(2, 0, True)] + [(1, 0, False)]
                     + [(2, 1, False)] * 3 + [(2, 1, True)])  # per phase: 3 warm-ups and 1 capture
    assert [g.replays for g in fake.graphs] == [2, 2] and runner.shape == (2, 1)
    assert fake.streams == 1  # the same side stream for both phases


# ---------------------------------------------------------------- the feeds give the same batches

def test_feeds_give_the_iterators_batches(tmp_path):
    """The round feed's batches (device gather + static policy), the host-staged ones, and a StagedFeed over the
    iterators (indexed policy) are identical, step for step, validation included."""
    def pipeline():
        tr = _build(tmp_path / str(len(list(tmp_path.iterdir()))), "first_bn")
        return tr.pipeline

    gather, staged_rows, iterators = pipeline(), pipeline(), pipeline()
    feeds = [gather.round_feed(2, 1), staged_rows.round_feed(2, 1), StagedFeed(iterators, 2, 1, torch.device("cpu"))]
    feeds[1].stager = HostStager({k: staged_rows._sets[k] for k in ("train", "val")}, {"train": 2, "val": 1}, 8,
                                 torch.device("cpu"))
    for epoch in range(2):
        for feed in feeds:
            feed.start_epoch(epoch)
        for n_train, n_val in ((2, 1), (1, 0)) if epoch == 0 else ((1, 1), (2, 1)):
            batches = []
            for feed in feeds:
                feed.prepare(n_train, n_val)
                batches.append([feed.train_batch(k) for k in range(n_train)] +
                               [feed.val_batch(j) for j in range(n_val)])
            for a, b, c in zip(*batches):
                for x, y, z in zip(a, b, c):
                    if x is None:
                        assert y is None and z is None
                        continue
                    assert torch.equal(x, y) and torch.equal(x, z)
    assert gather.state_dict()["step"] == iterators.state_dict()["step"] and gather.epoch == iterators.epoch == 2
    assert math.isfinite(float(feeds[0].train_batch(0).images.sum()))


def test_empty_validation_split_is_the_shared_data_error(tmp_path):
    """The torch pipeline words it as the DALI one does (pipelines/base.py), with the fix."""
    from hba_fast.data.base import EMPTY_VAL
    from hba_fast.errors import DataError

    data = _data_cfg(num_val=0)
    pipe = TorchPipeline(data, load_splits(data), None, torch.device("cpu"), seed=5)
    with pytest.raises(DataError) as e:
        pipe.val_batch()
    assert str(e.value) == EMPTY_VAL and "set data.num_val > 0" in EMPTY_VAL


def test_schedule_sampler_reads_its_static_entry():
    probs = torch.rand(3, 30)
    mags = torch.rand(3, 30)
    s = ScheduleSampler(Schedule(probs, mags, ranges="any"), 3)
    s.set_epoch(1, "cpu")
    buf = s._on[torch.device("cpu")][1]
    first = s.sample(4, 1, "cpu")
    assert torch.equal(first.probs, probs[1].repeat(4, 1)) and torch.equal(first.mags, mags[1].repeat(4, 1))
    s.set_epoch(2, "cpu")  # a captured round reads the same buffer: it follows set_epoch without Python
    assert s._on[torch.device("cpu")][1] is buf and torch.equal(buf[0], probs[2])


# ---------------------------------------------------------------- GPU: graphs against eager (the prepared GPU check)

def _gpu_data(n_steps=12, batch=128, size=32):
    return _data_cfg(image_size=size, batch_size=batch, num_train=n_steps * batch, num_val=2 * batch,
                     num_test=batch)


def _gpu_pair(tmp_path, strategy, model, amp, data, **train):
    runs = {}
    for mode in ("off", "on"):
        tr = _build(tmp_path / mode, strategy, model, "cuda", data=data, amp=amp, graphs=mode, **train)
        runs[mode] = (tr, *_record(tr))
        tr.fit()
    return runs


def _same_generators(a, b):
    """Replays advance every generator of the round as the eager rounds do (Philox offsets), bit for bit."""
    for ga, gb in zip(a.feed.generators(), b.feed.generators(), strict=True):
        assert torch.equal(ga.get_state(), gb.get_state())


@pytest.mark.gpu
@pytest.mark.parametrize("amp", ["bf16", "off"])
def test_gpu_graphs_equal_eager_wrn_40_2(tmp_path, amp):
    """WRN-40-2, batch 128, first_bn, 2 epochs of 6 rounds (3 warm-ups, a capture, 8 replays) with graphs, against
    the same rounds eager; deterministic algorithms, same seeds, so the kernels are the same and only the capture
    differs. Stated tolerance: losses and lambda within 1e-3 (fp32) / 1e-2 (bf16), room for cuBLAS choosing other
    algorithms under capture; a stale index, lr or random draw in a replay moves losses by far more. The
    generators' states must agree exactly."""
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        runs = _gpu_pair(tmp_path, "first_bn", "wrn-40-2", amp, _gpu_data())
    finally:
        torch.use_deterministic_algorithms(False)
    (eager, losses, lams), (graphed, g_losses, g_lams) = runs["off"], runs["on"]
    assert graphed.rounds.graph is not None and eager.rounds.graph is None
    _same_generators(eager, graphed)
    # HBA's policy draws are discrete: a last-bit difference can change a later draw, and the trajectories part.
    # With the same kernels there is none; a difference here means capture changed the numerics (or a bug).
    tol = 1e-3 if amp == "off" else 1e-2
    torch.testing.assert_close(torch.stack(g_losses), torch.stack(losses), rtol=tol, atol=tol)
    torch.testing.assert_close(torch.stack(g_lams), torch.stack(lams), rtol=0, atol=tol)


@pytest.mark.gpu
def test_gpu_capture_with_triton_kernels_and_resume(tmp_path, monkeypatch):
    """conv+bn (every conv and BN a Triton hyper-layer kernel, first launched in the warm-up) captured and replayed,
    against eager (bf16, tolerance 1e-2); a run killed after epoch 1 resumes (its graph rebuilt) to the uninterrupted
    run's lambda within 1e-3 and its generators' exact states. One autotuner config per kernel: this checks the
    capture, not the tuning (which would compile dozens of configs per conv shape)."""
    from hba_fast.kernels import hyper_conv as hc

    monkeypatch.setattr(hc, "_GPU_CONFIGS", {kind: configs[:1] for kind, configs in hc._GPU_CONFIGS.items()})
    hc._tuned.cache_clear()
    try:
        _capture_with_triton_and_resume(tmp_path)
    finally:
        hc._tuned.cache_clear()  # the next user gets the full autotuner again


def _capture_with_triton_and_resume(tmp_path):
    data = _gpu_data(n_steps=8, batch=32)
    runs = _gpu_pair(tmp_path, "conv+bn", "wrn-16-2", "bf16", data)
    (eager, losses, _), (graphed, g_losses, _) = runs["off"], runs["on"]
    assert graphed.rounds.graph is not None
    _same_generators(eager, graphed)
    torch.testing.assert_close(torch.stack(g_losses), torch.stack(losses), rtol=1e-2, atol=1e-2)

    class Killed(Exception):
        pass

    first = _build(tmp_path / "b", "conv+bn", "wrn-16-2", "cuda", data=data, amp="bf16", graphs="on")
    end_epoch = first._end_epoch

    def end_epoch_then_die(images_per_s):
        end_epoch(images_per_s)
        raise Killed

    first._end_epoch = end_epoch_then_die
    with pytest.raises(Killed):
        first.fit()
    resumed = _build(tmp_path / "c", "conv+bn", "wrn-16-2", "cuda", data=data, amp="bf16", graphs="on")
    assert resumed.resume(tmp_path / "b" / "checkpoint.pt")
    resumed.fit()
    assert resumed.rounds.graph is not None
    _same_generators(resumed, graphed)
    torch.testing.assert_close(resumed.hyper.lam.detach(), graphed.hyper.lam.detach(), rtol=0, atol=1e-3)


@pytest.mark.gpu
def test_gpu_eager_rounds_pass_sync_debug_mode(tmp_path):
    """Eager rounds on CUDA (graphs off, after one round of lazy set-up) with torch's sync debug mode set to error:
    any synchronising call in the round raises. Device-resident and host-staged (pinned, side stream) data."""
    for resident in (True, False):
        data = dataclasses.replace(_gpu_data(n_steps=6, batch=32), device_resident=resident)
        tr = _build(tmp_path / str(resident), "first_bn", "wrn-16-2", "cuda", data=data, graphs="off")
        assert (tr.feed.stager is None) == resident
        tr._start_epoch()
        tr.run_round(2, 1)  # lazy set-up (optimiser state, cuDNN plans) may sync once
        torch.cuda.set_sync_debug_mode("error")
        try:
            for _ in range(2):
                tr.run_round(2, 1)
        finally:
            torch.cuda.set_sync_debug_mode(0)
        torch.cuda.synchronize()
        assert math.isfinite(tr._train_loss.pop())


@pytest.mark.gpu
@pytest.mark.slow
def test_gpu_compile_with_graphs(tmp_path):
    """torch.compile (inductor, default mode) inside the captured round: it trains, and its first round's losses
    (before any hyper step or different draw can part the runs) match the eager round's within 2e-2 (bf16,
    inductor's fusions round differently)."""
    torch._dynamo.reset()
    data = _gpu_data(n_steps=8, batch=32)
    compiled = _build(tmp_path / "c", "first_bn", "wrn-16-2", "cuda", data=data, amp="bf16", graphs="on",
                      compile="default")
    losses, lams = _record(compiled)
    compiled.fit()
    eager = _build(tmp_path / "e", "first_bn", "wrn-16-2", "cuda", data=data, amp="bf16", graphs="off")
    e_losses, _ = _record(eager)
    eager.fit()
    assert compiled.rounds.graph is not None and len(losses) == len(e_losses)
    assert all(math.isfinite(float(v)) for v in losses)
    torch.testing.assert_close(torch.stack(losses[:2]), torch.stack(e_losses[:2]), rtol=2e-2, atol=2e-2)
    assert (lams[-1] - SearchSpace().init_lam().cuda()).abs().max() > 0.05
