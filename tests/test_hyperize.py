"""hyperize: any nn.Module as a hypernetwork.

Reference for the hyper-layers: the materialised per-sample model. For every sample i, the plain model
materialize(lam_i) applied to x_i alone (eval mode, so batch norm uses running statistics) must give the
hyperized model's output for row i of the batch with per-sample lam. Also: with phiU = 0 the hyperized model is
the original; materialize gives the user's own class, whose state dict loads into a fresh instance; "first" is
forward execution order. On real torchvision (ResNet, MobileNetV3, EfficientNet, RegNet; ConvNeXt for the
error) and timm models (ResNet-D, MobileNetV3, EfficientNet with BatchNormAct2d), and a few search steps.
"""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from hba_fast import hyperize
from hba_fast.errors import ConfigError
from hba_fast.models.hyperize import HyperizedBatchNorm2d, HyperizedConv2d, HyperizedLinear, execution_order
from hba_fast.models.layers import HyperModule

D = 54


class _Tokens(nn.Module):
    def forward(self, x):  # (B, C, H, W) -> (B, HW, C)
        return x.flatten(2).transpose(1, 2)


class _Net(nn.Module):
    """Layers declared in the reverse of their execution order; grouped, dilated, 'same', reflect-padded convs;
    a Linear on tokens (B, N, C); a user forward with its own control flow."""

    def __init__(self, classes: int = 5):
        super().__init__()
        self.head = nn.Linear(16, classes)
        self.tokens_fc = nn.Linear(16, 16)
        self.bn_late = nn.BatchNorm2d(16)
        self.conv_group = nn.Conv2d(16, 16, 3, padding="same", dilation=2, groups=4, bias=False)
        self.conv_reflect = nn.Conv2d(8, 16, 3, padding=1, padding_mode="reflect")
        self.bn_early = nn.BatchNorm2d(8)
        self.stem = nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False)

    def forward(self, x):
        x = torch.relu(self.bn_early(self.stem(x)))
        x = self.conv_reflect(x)
        if x.shape[-1] > 1:  # user control flow stays as it is
            x = torch.relu(self.bn_late(self.conv_group(x)))
        t = self.tokens_fc(_Tokens()(x))  # (B, N, 16)
        return self.head(t.mean(1))


def _randomise_(model: nn.Module) -> None:
    """Give BN non-trivial running statistics and affine, and phiU / phiV visible effects."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if hasattr(m, "running_mean") and m.running_mean is not None:
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            if isinstance(m, HyperModule):
                m.weight_v.copy_(torch.randn(m.weight_v.shape, generator=g) * 0.05)
                if m.bias_v is not None:
                    m.bias_v.copy_(torch.randn(m.bias_v.shape, generator=g) * 0.05)
                if isinstance(m, HyperizedBatchNorm2d):
                    m.bias_u.copy_(torch.randn(m.bias_u.shape, generator=g))


def test_first_means_execution_order():
    net = _Net()
    assert execution_order(net, ("bn",)) == ["bn_early", "bn_late"]
    assert [n for n, m in net.named_modules() if isinstance(m, nn.BatchNorm2d)] == ["bn_late", "bn_early"]
    assert hyperize(net, "first_bn").hyper_layer_names() == ["bn_early"]
    assert hyperize(net, "first_conv").hyper_layer_names() == ["stem"]


@pytest.mark.parametrize("strategy", ["all", "conv+bn", "first_bn"])
def test_per_sample_output_equals_materialized_per_sample_models(strategy):
    torch.manual_seed(0)
    net = _Net()
    h = hyperize(net, strategy)
    _randomise_(h)
    h.eval()
    x, lam = torch.randn(4, 3, 12, 12), torch.randn(4, D)
    y = h(x, lam)  # (4, 5)
    for i in range(4):
        plain = h.materialize(lam[i]).eval()
        assert type(plain) is _Net
        torch.testing.assert_close(y[i:i + 1], plain(x[i:i + 1]), rtol=1e-4, atol=1e-5)


def test_phi_u_zero_is_the_original_and_materialize_round_trips():
    torch.manual_seed(1)
    net = _Net()
    h = hyperize(net, "all")
    assert {type(m) for m in h.modules() if isinstance(m, HyperModule)} == {
        HyperizedConv2d, HyperizedBatchNorm2d, HyperizedLinear}
    with torch.no_grad():
        for m in h.modules():
            if isinstance(m, HyperModule):
                m.weight_u.zero_()
                if m.bias_u is not None:
                    m.bias_u.zero_()
    x, lam = torch.randn(3, 3, 12, 12), torch.randn(3, D)
    for mode in ("eval", "train"):  # eval first: a train-mode forward updates running statistics
        getattr(net, mode)()
        getattr(h, mode)()
        ref = copy.deepcopy(net)(x)
        torch.testing.assert_close(h(x, lam), ref, rtol=1e-5, atol=1e-6)
    plain = h.materialize(lam[0])
    fresh = _Net()
    fresh.load_state_dict(plain.state_dict())
    torch.testing.assert_close(fresh.eval()(x), h.eval()(x, lam[0]), rtol=1e-5, atol=1e-6)


def test_shared_lam_matches_materialize_and_gradients_flow():
    torch.manual_seed(2)
    h = hyperize(_Net(), "all")
    _randomise_(h)
    x, lam = torch.randn(3, 3, 12, 12), torch.randn(D, requires_grad=True)
    h.train()
    y = h(x, lam)
    plain = h.materialize(lam.detach()).train()
    torch.testing.assert_close(y, plain(x), rtol=1e-4, atol=1e-5)  # the batch's statistics in both
    (g,) = torch.autograd.grad(y.square().sum(), [lam])
    assert g.abs().sum() > 0
    y = h(x, torch.randn(3, D))
    y.sum().backward()
    assert h.model.stem.weight.grad is not None and h.model.stem.weight_u.grad is not None


def test_original_model_is_untouched_and_errors_are_clear():
    net = _Net()
    h = hyperize(net, "first_bn")
    assert isinstance(net.bn_early, nn.BatchNorm2d) and not isinstance(net.bn_early, HyperModule)
    with pytest.raises(ValueError, match=r"model\(x, lam\)"):
        h(torch.randn(2, 3, 12, 12))
    with pytest.raises(ValueError, match="per-sample lam has 3 rows"):
        h(torch.randn(2, 3, 12, 12), torch.randn(3, D))
    no_bn = nn.Sequential(nn.Conv2d(3, 4, 3), nn.GroupNorm(2, 4), nn.Flatten(), nn.LazyLinear(2))
    no_bn(torch.randn(1, 3, 8, 8))
    with pytest.raises(ConfigError, match="strategies that fit this model: all, conv, first_conv, none"):
        hyperize(no_bn, "first_bn")

    class OwnConv(nn.Conv2d):
        def forward(self, x):  # e.g. weight standardisation
            return super().forward(x) * 2

    odd = nn.Sequential(OwnConv(3, 4, 3), nn.BatchNorm2d(4))
    with pytest.raises(ConfigError, match="overrides forward"):
        hyperize(odd, "first_conv")
    conv = hyperize(odd, "conv")
    assert conv.hyper_layer_names() == [] and conv.skipped == ["0"]


def test_strategy_none_is_the_plain_model():
    net = _Net().eval()
    h = hyperize(net, "none").eval()
    x = torch.randn(2, 3, 12, 12)
    torch.testing.assert_close(h(x), net(x))
    assert h.hyper_layer_names() == []


# ---------------------------------------------------------------- real torchvision and timm models

TORCHVISION = {"resnet18": "bn1", "mobilenet_v3_small": "features.0.1", "efficientnet_b0": "features.0.1",
               "regnet_y_400mf": "stem.1"}


def _zero_phi_u_(model):
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, HyperModule):
                m.weight_u.zero_()
                if m.bias_u is not None:
                    m.bias_u.zero_()


@pytest.mark.slow
@pytest.mark.parametrize("arch", sorted(TORCHVISION))
def test_torchvision_models(arch):
    tv = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    net = tv.models.get_model(arch, weights=None, num_classes=10).eval()
    h = hyperize(net)  # first_bn
    assert h.hyper_layer_names() == [TORCHVISION[arch]]
    x, lam = torch.randn(2, 3, 32, 32), torch.randn(2, D)
    _zero_phi_u_(h)
    h.eval()
    torch.testing.assert_close(h(x, lam), net(x), rtol=1e-5, atol=1e-5)
    _randomise_(h)
    plain = h.materialize(lam[1])
    assert type(plain) is type(net)
    fresh = tv.models.get_model(arch, weights=None, num_classes=10)
    fresh.load_state_dict(plain.state_dict())
    torch.testing.assert_close(fresh.eval()(x[1:]), h(x, lam)[1:], rtol=1e-4, atol=1e-5)


def test_torchvision_depthwise_convs_per_sample():
    tv = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    h = hyperize(tv.models.mobilenet_v3_small(num_classes=10), "conv").eval()
    assert len(h.hyper_layer_names()) > 40 and not h.skipped
    _randomise_(h)
    x, lam = torch.randn(2, 3, 32, 32), torch.randn(2, D)
    y = h(x, lam)
    for i in range(2):
        torch.testing.assert_close(y[i:i + 1], h.materialize(lam[i]).eval()(x[i:i + 1]), rtol=1e-4, atol=1e-4)


def test_convnext_has_no_batch_norm():
    tv = pytest.importorskip("torchvision")
    net = tv.models.convnext_tiny(num_classes=10)
    with pytest.raises(ConfigError, match="needs BatchNorm2d layers.*strategies that fit this model: all, conv, "
                                          "first_conv, none"):
        hyperize(net, "first_bn")
    assert hyperize(net, "first_conv").hyper_layer_names() == ["features.0.0"]


TIMM = {"resnet26d": "conv1.1", "mobilenetv3_small_050": "bn1", "efficientnet_b0": "bn1"}


@pytest.mark.slow
@pytest.mark.parametrize("arch", sorted(TIMM))
def test_timm_models(arch):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    net = timm.create_model(arch, pretrained=False, num_classes=10).eval()
    h = hyperize(net)
    assert h.hyper_layer_names() == [TIMM[arch]]
    x, lam = torch.randn(2, 3, 32, 32), torch.randn(2, D)
    _zero_phi_u_(h)
    h.eval()
    torch.testing.assert_close(h(x, lam), net(x), rtol=1e-5, atol=1e-5)  # BatchNormAct2d keeps its activation
    _randomise_(h)
    plain = h.materialize(lam[0])
    assert type(plain) is type(net) and type(plain.get_submodule(TIMM[arch])) is type(net.get_submodule(TIMM[arch]))
    fresh = timm.create_model(arch, pretrained=False, num_classes=10)
    fresh.load_state_dict(plain.state_dict())
    torch.testing.assert_close(fresh.eval()(x[:1]), h(x, lam)[:1], rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- from the config: a search on the user's model

@pytest.mark.slow
def test_search_on_torchvision_and_timm_models(tmp_path):
    pytest.importorskip("torchvision")
    from hba_fast.config import load_config
    from hba_fast.search import search

    tiny = ["data.num_train=32", "data.num_val=16", "data.num_test=8", "data.batch_size=8", "train.epochs=1",
            "train.steps_per_epoch=2", "train.log_every=1", "train.eval_every=0", "optim.hyper_lr=0.1",
            "run.progress=false"]
    out = search(load_config(None, tiny + ["model.name=torchvision:resnet18", f"run.out_dir={tmp_path / 'tv'}"]))
    saved = torch.load(out / "model.pt", weights_only=False)
    import torchvision

    torchvision.models.resnet18(num_classes=10).load_state_dict(saved["state_dict"])  # the user's own class
    lam = torch.tensor(__import__("json").loads((out / "schedule.json").read_text())["epochs"][0]["lam"])
    assert lam.shape == (D,)
    pytest.importorskip("timm")
    out = search(load_config(None, tiny + ["model.name=timm:resnet26d", "model.strategy=first_conv",
                                           f"run.out_dir={tmp_path / 'timm'}"]))
    assert (out / "schedule.json").is_file()


def test_config_accepts_library_names_and_reports_unknown_ones(tmp_path):
    from hba_fast.config import load_config
    from hba_fast.models import build_model

    cfg = load_config(None, ["model.name=torchvision:resnet18", "model.checkpoint=null"])
    assert cfg.model.name == "torchvision:resnet18"
    with pytest.raises(ConfigError, match="did you mean"):
        load_config(None, ["model.name=resnet18"])
    pytest.importorskip("torchvision")
    with pytest.raises(ConfigError, match="torchvision:resnet18"):
        build_model("torchvision:resnet81", 10)
    with pytest.raises(ConfigError, match="not found"):
        build_model("torchvision:resnet18", 10, checkpoint=str(tmp_path / "missing.pt"))


def test_local_checkpoint_weights(tmp_path, caplog):
    tv = pytest.importorskip("torchvision")
    from hba_fast.models.external import build_external

    source = tv.models.resnet18(num_classes=1000)
    torch.save({"state_dict": source.state_dict()}, tmp_path / "w.pt")
    net = build_external("torchvision:resnet18", 10, str(tmp_path / "w.pt"))
    torch.testing.assert_close(net.conv1.weight, source.conv1.weight)
    assert net.fc.weight.shape == (10, 512)  # another number of classes: left fresh, and said so
    assert "fc.weight" in caplog.text
