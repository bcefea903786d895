"""Trainer units: the weight step moves phi only, the hyper step moves lambda only (and leaves BN running
statistics alone), the learning-rate schedule, state round trips."""
import math

import pytest
import torch

from hba_fast.augment.space import SearchSpace
from hba_fast.config import OptimConfig, TrainConfig
from hba_fast.data.base import Batch
from hba_fast.engine.hyperparams import Hyperparams
from hba_fast.engine.trainer import Trainer, frozen_bn_statistics, lr_factor
from hba_fast.errors import CheckpointError
from hba_fast.models import build_model
from hba_fast.run.session import Run


class FakePipeline:
    """Random 16x16 images, per-sample lambda_i around a fixed point; enough to drive the trainer (through a
    StagedFeed: it has no round feed of its own)."""
    steps_per_epoch = 3

    def __init__(self, batch=8):
        self.g = torch.Generator().manual_seed(0)
        self.batch = self.batch_size = batch

    def _batch(self, lam=True):
        x = torch.randn(self.batch, 3, 16, 16, generator=self.g)
        y = torch.randint(0, 10, (self.batch,), generator=self.g)
        return Batch(x, y, torch.randn(self.batch, 54, generator=self.g) if lam else None)

    def train_epoch(self, epoch):
        return (self._batch() for _ in range(self.steps_per_epoch))

    def val_batch(self):
        return self._batch(lam=False)

    def eval_batches(self, split):
        return (self._batch(lam=False) for _ in range(2))

    def state_dict(self):
        return {"g": self.g.get_state()}

    def load_state_dict(self, s):
        self.g.set_state(s["g"])


def _trainer(tmp_path, strategy="bn", **train):
    torch.manual_seed(0)
    model = build_model("wrn-40-2", 10, strategy)
    hyper = Hyperparams(SearchSpace(), sigma=1.0, lr=OptimConfig().hyper_lr, device="cpu")
    cfg = TrainConfig(**{"epochs": 2, "log_every": 1, **train})
    return Trainer(model, FakePipeline(), Run.local(tmp_path), OptimConfig(), cfg, hyper)


def _snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_hyper_step_moves_only_lambda(tmp_path):
    tr = _trainer(tmp_path)
    before, lam0 = _snapshot(tr.model), tr.hyper.lam.detach().clone()
    tr.hyper_step(tr.pipeline.val_batch())
    after = _snapshot(tr.model)
    changed = [k for k in before if not k.endswith("num_batches_tracked") and not torch.equal(before[k], after[k])]
    assert changed == [], f"the hyper step changed {changed}"
    assert all(p.grad is None for p in tr.model.parameters()), "weight gradients were computed in the hyper step"
    assert (tr.hyper.lam.detach() - lam0).abs().max() > 0
    assert (tr.hyper.lam.detach() - lam0).abs().max() <= OptimConfig().hyper_lr * 1.01  # one Adam step is <= lr


def test_weight_step_moves_phi_and_running_stats_not_lambda(tmp_path):
    tr = _trainer(tmp_path)
    before, lam0 = _snapshot(tr.model), tr.hyper.lam.detach().clone()
    tr.weight_step(tr.pipeline._batch())
    after = _snapshot(tr.model)
    assert torch.equal(tr.hyper.lam.detach(), lam0)
    assert not torch.equal(before["fc.weight"], after["fc.weight"])
    running = [k for k in before if k.endswith("running_mean")]
    assert running and all(not torch.equal(before[k], after[k]) for k in running)


def test_frozen_bn_statistics_restores_momentum(tmp_path):
    model = build_model("wrn-40-2", 10, "bn")
    with frozen_bn_statistics(model):
        assert all(m.momentum == 0.0 for m in model.modules() if hasattr(m, "running_var"))
    assert all(m.momentum == 0.1 for m in model.modules() if hasattr(m, "running_var"))


def test_lr_schedules():
    cos = OptimConfig(lr=0.1, schedule="cosine")
    assert lr_factor(cos, 0, 10) == pytest.approx(1.0)
    assert lr_factor(cos, 5, 10) == pytest.approx(0.5)
    assert lr_factor(cos, 10, 10) == pytest.approx(0.0, abs=1e-12)
    step = OptimConfig(schedule="step", milestones=(2, 4), gamma=0.1)
    assert [lr_factor(step, e, 6) for e in (0, 1.9, 2, 4.5)] == pytest.approx([1, 1, 0.1, 0.01])
    warm = OptimConfig(warmup_epochs=2.0, schedule="constant")
    assert lr_factor(warm, 1.0, 10) == pytest.approx(0.5, rel=1e-6) and lr_factor(warm, 3, 10) == 1.0


def test_fit_records_schedule_and_round_trips(tmp_path):
    tr = _trainer(tmp_path)
    tr.fit()
    assert tr.epoch == 2 and tr.step == 6 and len(tr.schedule) == 2
    probs = torch.tensor(tr.schedule[-1]["probs"])
    assert probs.shape == (30,) and ((probs >= 0) & (probs <= 1)).all()
    state = tr.state_dict()
    other = _trainer(tmp_path / "b")
    other.load_state_dict(state)
    assert other.epoch == 2 and torch.equal(other.hyper.lam.detach(), tr.hyper.lam.detach())
    for k, v in tr.model.state_dict().items():
        assert torch.equal(other.model.state_dict()[k], v)


def test_resume_mid_run_matches_an_uninterrupted_run(tmp_path):
    """Stop after epoch 1, load its state into a fresh trainer: epoch 2 ends exactly where the straight run does."""
    straight = _trainer(tmp_path / "a")
    straight.fit()

    class Killed(Exception):
        pass

    first = _trainer(tmp_path / "b")
    end_epoch = first._end_epoch

    def end_epoch_then_die(images_per_s):
        end_epoch(images_per_s)  # writes the checkpoint
        raise Killed

    first._end_epoch = end_epoch_then_die
    with pytest.raises(Killed):
        first.fit()
    resumed = _trainer(tmp_path / "c")
    torch.manual_seed(123)  # the resumed process starts from other RNG states
    resumed.pipeline.g.manual_seed(99)
    assert resumed.resume(tmp_path / "b" / "checkpoint.pt") and resumed.epoch == 1
    resumed.fit()
    assert resumed.step == straight.step == 6
    assert torch.equal(resumed.hyper.lam.detach(), straight.hyper.lam.detach())
    for k, v in straight.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[k], v), k
    state = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=False)
    assert len(state["ranks"]) == 1
    with pytest.raises(CheckpointError, match="written by 2 process"):  # resuming with another process count
        _trainer(tmp_path / "d").load_state_dict({**state, "ranks": state["ranks"] * 2})


def test_resume_on_another_device_kind_says_so(tmp_path):
    """A checkpoint from a CUDA run on a machine without CUDA: a CheckpointError that says where to resume it, not
    "damaged" (the CUDA generator states would not go into CPU generators); older checkpoints say it by their
    CUDA RNG state."""
    from hba_fast.run.checkpoint import save_checkpoint

    tr = _trainer(tmp_path / "a")
    state = tr.state_dict()
    assert state["device"] == "cpu"
    cuda_rng = torch.zeros(16, dtype=torch.uint8)  # a Philox state: seed and offset
    looks_cuda = {**state, "device": "cuda"}
    save_checkpoint(tmp_path / "cuda.pt", looks_cuda)
    with pytest.raises(CheckpointError, match="written on cuda, this run is on cpu: resume it on a GPU machine"):
        tr.resume(tmp_path / "cuda.pt")
    old = {k: v for k, v in state.items() if k != "device"}
    old["ranks"] = [{**state["ranks"][0], "rng": {"cpu": state["ranks"][0]["rng"]["cpu"], "cuda": cuda_rng}}]
    with pytest.raises(CheckpointError, match="written on cuda"):
        tr.load_state_dict(old)
    tr.load_state_dict({k: v for k, v in state.items() if k != "device"})  # an older CPU checkpoint still loads


def test_hyperparams_keep_this_devices_adam_flags():
    """Adam's saved groups carry the flags of the device that wrote them (capturable on CUDA): after loading, the
    optimiser has this device's (fused on the CPU) and steps."""
    hyper = Hyperparams(SearchSpace(), sigma=1.0, lr=0.01, device="cpu")
    state = hyper.state_dict()
    for group in state["optimizer"]["param_groups"]:  # as Hyperparams on CUDA writes them
        group.update(capturable=True, fused=None)
    other = Hyperparams(SearchSpace(), sigma=1.0, lr=0.01, device="cpu")
    other.load_state_dict(state)
    group = other.optimizer.param_groups[0]
    assert group["capturable"] is False and group["fused"] is True
    before = other.lam.detach().clone()
    other.step((other.lam ** 2).sum())
    assert not torch.equal(other.lam.detach(), before)


def test_plain_training_without_lambda(tmp_path):
    model = build_model("wrn-40-2", 10, "none")
    tr = Trainer(model, FakePipeline(), Run.local(tmp_path), OptimConfig(), TrainConfig(epochs=1, t_val=0, log_every=1))
    tr.fit()
    assert tr.schedule == [] and tr.step == 3
    assert math.isfinite(tr.evaluate("test")["loss"])
