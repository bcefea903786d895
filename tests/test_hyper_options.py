"""The hyper step's open choices as options: batch norm in the hyper step (train.hyper_bn), the warm-up before
the first hyper step (train.hyper_warmup_epochs) and the hyper-BN initialisation (model.hyper_bn_bias_u,
model.hyper_bn_v_std)."""
import math

import pytest
import torch
import torch.nn.functional as F

from hba_fast.augment.space import SearchSpace
from hba_fast.config import OptimConfig, TrainConfig, load_config
from hba_fast.data.base import Batch
from hba_fast.engine.hyperparams import Hyperparams
from hba_fast.engine.trainer import Trainer, hyper_bn_mode
from hba_fast.errors import ConfigError
from hba_fast.models import build_model
from hba_fast.models.layers import HyperBatchNorm2d, init_hyper_bn
from hba_fast.run.session import Run


class FakePipeline:
    """Random 16x16 images with per-sample lambda_i; records every validation batch it hands out."""
    steps_per_epoch, batch_size = 4, 8

    def __init__(self):
        self.g = torch.Generator().manual_seed(0)
        self.val = []

    def _batch(self, lam=True):
        x = torch.randn(8, 3, 16, 16, generator=self.g) * 3 + 1  # far from the initial running stats (0, 1)
        return Batch(x, torch.randint(0, 10, (8,), generator=self.g),
                     torch.randn(8, 54, generator=self.g) if lam else None)

    def train_epoch(self, epoch):
        return (self._batch() for _ in range(self.steps_per_epoch))

    def val_batch(self):
        self.val.append(self._batch(lam=False))
        return self.val[-1]

    def eval_batches(self, split):
        return iter(())

    def state_dict(self):
        return {}

    def load_state_dict(self, s):
        pass


def _trainer(tmp_path, **train):
    torch.manual_seed(0)
    model = build_model("wrn-16-2", 10, "first_bn")
    hyper = Hyperparams(SearchSpace(), sigma=1.0, lr=0.05, device="cpu")
    cfg = TrainConfig(**{"epochs": 2, "log_every": 1, "eval_every": 0, **train})
    return Trainer(model, FakePipeline(), Run.local(tmp_path), OptimConfig(), cfg, hyper)


@pytest.mark.parametrize("mode", ["batch", "running"])
def test_hyper_step_bn_mode(tmp_path, monkeypatch, mode):
    """The hyper step's loss is that of the model in train mode with frozen statistics (batch) or in eval mode
    (running); either way the running statistics and the model's mode are left as they were."""
    tr = _trainer(tmp_path, hyper_bn=mode)
    tr.model.train()
    losses = []
    monkeypatch.setattr(tr.hyper, "step", lambda loss, all_reduce: losses.append(loss.detach()))
    stats = {k: v.clone() for k, v in tr.model.state_dict().items() if "running" in k}
    tr.hyper_step(tr.pipeline.val_batch())
    assert tr.model.training
    assert all(torch.equal(v, tr.model.state_dict()[k]) for k, v in stats.items())
    batch, lam = tr.pipeline.val[-1], tr.hyper.lam.detach()
    with torch.no_grad():
        tr.model.train(mode == "batch")
        with hyper_bn_mode(tr.model, "batch") if mode == "batch" else torch.no_grad():
            want = F.cross_entropy(tr.model(batch.images, lam), batch.labels)
        tr.model.eval()
        other = F.cross_entropy(tr.model(batch.images, lam), batch.labels) if mode == "batch" else None
        tr.model.train()
    torch.testing.assert_close(losses[0], want)
    if other is not None:
        assert not torch.allclose(losses[0], other)  # the modes differ on this data (running stats are (0, 1))


def test_warmup_holds_lambda_then_steps(tmp_path):
    tr = _trainer(tmp_path, hyper_warmup_epochs=1, epochs=2)
    lam0 = tr.hyper.lam.detach().clone()
    tr.fit()
    assert len(tr.pipeline.val) == 2  # epoch 2 only: 4 weight steps / t_train 2 = 2 hyper steps
    first, second = tr.schedule
    assert torch.equal(torch.tensor(first["lam"]), lam0)  # no hyper step in the warm-up epoch
    assert (torch.tensor(second["lam"]) - lam0).abs().max() > 0


def test_options_in_config_with_errors():
    cfg = load_config(None, ["train.hyper_bn=running", "train.hyper_warmup_epochs=5", "model.hyper_bn_bias_u=1.0"])
    assert cfg.train.hyper_bn == "running" and cfg.train.hyper_warmup_epochs == 5
    assert cfg.model.hyper_bn_bias_u == 1.0
    with pytest.raises(ConfigError, match="'batch'"):
        load_config(None, ["train.hyper_bn=batchnorm"])
    with pytest.raises(ConfigError, match="minimum"):
        load_config(None, ["train.hyper_warmup_epochs=-1"])


def _lam_grad_and_bias_v(model):
    torch.manual_seed(4)
    lam = torch.full((54,), -2.9, requires_grad=True)
    loss = F.cross_entropy(model(torch.randn(4, 3, 16, 16), lam), torch.randint(0, 10, (4,)))
    loss.backward()
    return lam.grad, model.blocks[0].bn1.bias_v.grad


def test_hyper_bn_init_opens_the_shift_path():
    torch.manual_seed(5)
    model = build_model("wrn-16-2", 10, "first_bn")
    init_hyper_bn(model, bias_u=0.0, v_std=0.01)
    bn = model.blocks[0].bn1
    assert isinstance(bn, HyperBatchNorm2d) and torch.equal(bn.bias_u, torch.zeros(16))
    assert abs(bn.weight_v.std().item() - 0.01 / math.sqrt(54)) < 0.0003
    _, bias_v_grad = _lam_grad_and_bias_v(model)
    assert torch.equal(bias_v_grad, torch.zeros_like(bias_v_grad))  # bias_u = 0: no gradient to the shift path
    model.zero_grad()
    init_hyper_bn(model, bias_u=1.0, v_std=0.1)
    assert torch.equal(bn.bias_u, torch.ones(16))
    assert abs(bn.bias_v.std().item() - 0.1 / math.sqrt(54)) < 0.003
    _, bias_v_grad = _lam_grad_and_bias_v(model)
    assert bias_v_grad.abs().sum() > 0
