"""Issue 19: search spaces as a registry, STN's CIFAR space, its per-sample consumers against one-sample-at-a-time
references, the Concrete relaxation's gradient against finite differences, STN's method, and the CLI end to end
(search, tune, plot) on the generated dataset. Small sizes, CPU."""
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hba_fast.augment import regularisers as reg
from hba_fast.augment.space import SearchSpace
from hba_fast.augment.spaces import SPACES, build_space
from hba_fast.cli import main
from hba_fast.engine.hyperparams import Hyperparams
from hba_fast.models import build_model
from hba_fast.models.dropout import concrete_dropout, sample_dropout
from hba_fast.models.regularised import Regularised

TV = pytest.importorskip("torchvision.transforms.functional")


# ---------------------------------------------------------------------------------------------- the registry
def test_registry_and_stn_space():
    assert SPACES == ("pba", "stn-cifar")
    assert isinstance(build_space("pba"), SearchSpace)
    with pytest.raises(ValueError, match="did you mean 'stn-cifar'"):
        build_space("stn-cifa")
    space = build_space("stn-cifar")
    names = space.entry_names()
    assert space.lam_dim == 15 and len(names) == 15
    assert sum("dropout" in n for n in names) == 8  # 5 conv, 2 fc, input: STN's --tune_all on alexnet
    init = space.used_values(space.init_lam())
    expect = {n: 0.05 for n in names} | {"cutlength": 4.0, "cutholes": 1.0}
    assert init.tolist() == pytest.approx([expect[n] for n in names], abs=1e-6)
    lo, hi = space.bounds()
    assert hi[space.index["dropout0"]] == pytest.approx(0.9) and hi[space.index["hue"]] == pytest.approx(0.5)
    v = torch.rand(4, 15) * (hi - lo) + lo
    assert torch.allclose(space.values(space.encode(v)), v, atol=1e-4)


def test_top_level_space_key_is_policy_space():
    from hba_fast.config import from_dict
    from hba_fast.errors import ConfigError

    assert from_dict({"space": "stn-cifar"}).policy.space == "stn-cifar"
    assert from_dict({}).policy.space == "pba"
    with pytest.raises(ConfigError, match="disagree"):
        from_dict({"space": "stn-cifar", "policy": {"space": "pba"}})
    with pytest.raises(ConfigError, match="did you mean 'stn-cifar'"):
        from_dict({"space": "stn-cifa"})


def test_table_space_transforms():
    from hba_fast.augment.table_space import Hyperparameter, TableSpace

    space = TableSpace("t", (Hyperparameter("rate", 0.0, 1.0, 0.2), Hyperparameter("scale", 1e-3, 10.0, 0.5, "log"),
                             Hyperparameter("holes", 0.0, 4.0, 1.5, discrete=True)))
    lam = space.init_lam()
    assert lam.tolist() == pytest.approx([math.log(0.2 / 0.8), math.log(0.5), math.log(1.5 / 2.5)], abs=1e-6)
    assert space.values(lam).tolist() == pytest.approx([0.2, 0.5, 1.5], abs=1e-6)
    assert space.used_values(lam).tolist() == pytest.approx([0.2, 0.5, 1.0], abs=1e-6)
    assert space.schedule_entry(3, lam)["values"] == pytest.approx({"rate": 0.2, "scale": 0.5, "holes": 1.0})


def test_pba_schedule_entry_is_unchanged():
    """The PBA space's schedule entry is the one the search always wrote: lam, probs, mags decoded from lambda."""
    space = SearchSpace()
    lam = space.init_lam() + 0.3 * torch.randn(54)
    hyper = Hyperparams(space, 1.0, 0.01, "cpu")
    with torch.no_grad():
        hyper.lam.copy_(lam)
    entry = hyper.end_epoch(0)
    probs, mags = space.decode(lam)
    assert entry == {"epoch": 0, "lam": lam.tolist(), "probs": probs.tolist(), "mags": mags.tolist()}
    assert hyper.hyper_lam(8) is hyper.lam  # HBA's hyper step: one shared lambda


# ---------------------------------------------------------------------------------------------- dropout
@pytest.mark.parametrize("channels", [False, True])
def test_sample_dropout_each_sample_at_its_own_rate(channels):
    """Each sample's output is what the plain layer (F.dropout / F.dropout2d) at that sample's rate gives: values in
    {0, x / (1 - p)}, the whole feature map at once for channel dropout, and the dropped fraction of p."""
    torch.manual_seed(0)
    rates = torch.tensor([0.0, 0.1, 0.5, 0.85])
    x = torch.rand(4, 256, 8, 8) + 0.5
    y = sample_dropout(x, rates, channels=channels)
    for i, p in enumerate(rates.tolist()):
        plain = F.dropout2d(x[i:i + 1], p, training=True) if channels else F.dropout(x[i:i + 1], p, training=True)
        for out in (y[i:i + 1], plain):
            kept = out != 0
            assert torch.allclose(out[kept], (x[i:i + 1] / (1 - p))[kept])
            if channels:  # a map is dropped whole or not at all
                assert ((kept.sum((2, 3)) == 0) | (kept.sum((2, 3)) == 64)).all()
            n = kept.numel() // (64 if channels else 1)
            dropped = 1 - kept.float().mean().item()
            assert abs(dropped - p) < 4 * math.sqrt(p * (1 - p) / n) + 1e-9, (i, p, dropped)


def test_concrete_dropout_gradient_matches_finite_differences():
    torch.manual_seed(1)
    x = torch.randn(3, 5, 4, 4, dtype=torch.float64)
    w = torch.randn_like(x)
    u = torch.rand(3, 5, 1, 1, dtype=torch.float64)  # fixed noise: the relaxation is a smooth function of p
    rate = torch.tensor([0.1, 0.4, 0.8], dtype=torch.float64, requires_grad=True)
    f = lambda p: (concrete_dropout(x, p, channels=True, u=u) * w).sum()  # noqa: E731
    (grad,) = torch.autograd.grad(f(rate), rate)
    h = 1e-6
    fd = torch.stack([(f(rate.detach() + h * e) - f(rate.detach() - h * e)) / (2 * h) for e in torch.eye(3,
                                                                                                     dtype=torch.float64)])
    assert torch.allclose(grad, fd, rtol=1e-5, atol=1e-7)
    assert grad.abs().min() > 0
    u_elem = torch.rand_like(x)  # element-wise masks: torch's own finite-difference check
    assert torch.autograd.gradcheck(lambda p: concrete_dropout(x, p, u=u_elem), (rate,))


# ---------------------------------------------------------------------------------------------- augmentation
def test_colour_jitter_matches_torchvision_per_sample():
    """Every sample at its own factors, against torchvision's adjust_* (what STN's ColorJitter calls) one sample at
    a time, in the same order."""
    torch.manual_seed(2)
    x = torch.rand(6, 3, 16, 16)
    b = torch.tensor([0.5, 1.0, 1.4, 0.9, 1.2, 0.0])
    c = torch.tensor([0.6, 1.0, 1.5, 0.2, 1.1, 1.0])
    s = torch.tensor([0.0, 1.0, 1.8, 0.5, 0.7, 1.3])
    h = torch.tensor([-0.4, 0.0, 0.25, 0.05, -0.1, 0.49])
    y = reg.colour_jitter(x, b, c, s, h)
    for i in range(6):
        ref = TV.adjust_brightness(x[i], b[i].item())
        ref = TV.adjust_contrast(ref, c[i].item())
        ref = TV.adjust_saturation(ref, s[i].item())
        ref = TV.adjust_hue(ref, h[i].item())
        assert torch.allclose(y[i], ref, atol=2e-5), (i, (y[i] - ref).abs().max())


def test_jitter_factors_ranges():
    j = torch.tensor([0.0, 0.5, 1.0]).repeat(200)
    b, c, s, h = reg.jitter_factors(j, j, j, 0.5 * j, torch.Generator().manual_seed(0))
    for f in (b, c, s):
        assert ((f >= (1 - j).clamp_min(0) - 1e-6) & (f <= 1 + j + 1e-6)).all()
    assert (h.abs() <= 0.5 * j + 1e-6).all() and h[2::3].abs().max() > 0.4


def _stn_cutout(img: np.ndarray, length: int, holes: int, centres) -> np.ndarray:
    """STN's util/cutout.py for one image (C, H, W), its random centres given."""
    if length <= 0 or holes <= 0:
        return img
    h, w = img.shape[1:]
    mask = np.ones((h, w), np.float32)
    for n in range(holes):
        y, x = centres[n]
        y1, y2 = int(np.clip(y - length / 2, 0, h)), int(np.clip(y + length / 2, 0, h))
        x1, x2 = int(np.clip(x - length / 2, 0, w)), int(np.clip(x + length / 2, 0, w))
        mask[y1:y2, x1:x2] = 0.0
    return img * mask


def test_cutout_matches_stn_per_sample():
    torch.manual_seed(3)
    x = torch.randn(7, 3, 32, 32)
    length = torch.tensor([0.0, 1.0, 4.0, 7.0, 16.0, 24.0, 9.0])
    holes = torch.tensor([1.0, 1.0, 2.0, 0.0, 3.0, 4.0, 4.0])
    centres = reg.cutout_centres(7, 4, 32, 32, "cpu", torch.Generator().manual_seed(0))
    y = reg.cutout(x, length, holes, centres)
    for i in range(7):
        ref = _stn_cutout(x[i].numpy(), int(length[i]), int(holes[i]), centres[i].tolist())
        assert np.array_equal(y[i].numpy(), ref), i
    assert (y[5] == 0).any() and torch.equal(y[3], x[3])


def test_input_scale_range():
    x = torch.ones(1000, 3, 2, 2)
    s = torch.full((1000,), 0.3)
    f = reg.input_scale(x, s)[:, 0, 0, 0]
    assert f.min() >= 1 / 1.3 - 1e-6 and f.max() <= 1.3 + 1e-6 and f.std() > 0.05


# ---------------------------------------------------------------------------------------------- the model
def _regularised(strategy="conv", hyper_dropout="off"):
    space = build_space("stn-cifar")
    net = build_model("alexnet-stn-small", 10, strategy, space.lam_dim)
    return Regularised(net, space, torch.tensor([0.5, 0.5, 0.5]), torch.tensor([0.25, 0.25, 0.25]), hyper_dropout)


@pytest.mark.parametrize("strategy", ["conv", "all"])
def test_alexnet_stn_materializes(strategy):
    """STN's AlexNet shape (5 convs, pools after 0, 1, 4, 2x2 before fc) and theta(lam) as a plain net."""
    from hba_fast.models import materialize

    torch.manual_seed(6)
    net = build_model("alexnet-stn", 10, strategy, 15).eval()
    assert [c.out_channels for c in net.convs] == [64, 192, 384, 256, 256] and net.fc1.in_features == 1024
    assert net.fc2.out_features == 4096
    x, lam = torch.randn(2, 3, 32, 32), torch.randn(15)
    plain = build_model("alexnet-stn", 10, "none", 15).eval()
    plain.load_state_dict(materialize(net, lam).state_dict())
    assert torch.allclose(plain(x), net(x, lam), atol=1e-5)


def test_regularised_applies_per_sample_in_training_only():
    torch.manual_seed(4)
    model = _regularised()
    space = model.space
    x = torch.randn(4, 3, 32, 32)
    lam = space.init_lam().repeat(4, 1)
    model.eval()
    assert torch.equal(model(x, lam[0]), model.net(x, lam[0]))  # eval: no augmentation, no dropout
    model.train()
    high = space.encode(torch.tensor([0.85] * 5 + [0.4, 0.8, 0.8, 0.8, 0.5, 0.3, 16.0, 3.0, 0.85, 0.85]))
    lam[0] = high  # sample 0 heavily regularised, the others at STN's start
    seen = {}
    model.net.drops[0].register_forward_hook(lambda m, i, o: seen.update(rate=m.rate.clone(), out=o))
    model(x, lam)
    assert seen["rate"][0] == pytest.approx(0.85, abs=1e-4) and seen["rate"][1] == pytest.approx(0.05, abs=1e-4)
    dropped = (seen["out"].flatten(2).abs().sum(2) == 0).float().mean(1)  # fraction of maps dropped per sample
    assert dropped[0] > 0.6 and dropped[1:].max() < 0.3


def test_hyper_step_gradient_paths():
    """off (STN's code): lambda reaches the hyper step's loss only through the hyper-layers; concrete: the dropout
    rates carry a direct gradient too."""
    torch.manual_seed(5)
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    for mode, plain_grad in (("off", False), ("concrete", True)):
        model = _regularised("none", mode).eval()
        lam = model.space.init_lam().requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(model(x, lam), y), lam, allow_unused=True)
        if not plain_grad:
            assert g is None  # a plain net, the hyper step in eval mode: no path from lambda to the loss
            continue
        drop = [model.space.index[n] for n in model.space.entry_names() if "dropout" in n and n != "indropout"]
        assert g[drop].abs().min() > 0 and g[model.space.index["hue"]] == 0
    model = _regularised("conv", "off").eval()
    lam = model.space.init_lam().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(model(x, lam), y), lam)
    assert g.abs().sum() > 0


def test_stn_method_learns_its_scale():
    space = build_space("stn-cifar")
    hyper = Hyperparams(space, 0.5, 0.1, "cpu", tune_scale=True, entropy_weight=1e-3)
    assert torch.allclose(F.softplus(hyper.scale), torch.full((15,), 0.5))
    lam_b = hyper.hyper_lam(16)
    assert lam_b.shape == (16, 15) and lam_b.requires_grad
    hyper.step((lam_b ** 2).mean())
    assert not torch.allclose(F.softplus(hyper.scale.detach()), torch.full((15,), 0.5))
    state = hyper.state_dict()
    other = Hyperparams(space, 0.5, 0.1, "cpu", tune_scale=True)
    other.load_state_dict(state)
    assert torch.equal(other.scale, hyper.scale)
    draws = hyper.sampler.sample(4096, 0, "cpu").lam - hyper.lam.detach()
    assert torch.allclose(draws.std(0), F.softplus(hyper.scale.detach()), rtol=0.1)


# ---------------------------------------------------------------------------------------------- end to end
TINY = ["data.num_train=96", "data.num_val=64", "data.num_test=64", "data.batch_size=32", "data.recipe=none",
        "data.backend=torch", "policy.space=stn-cifar", "policy.sigma=0.5", "model.name=alexnet-stn-small",
        "model.strategy=conv", "optim.hyper_lr=0.05", "train.epochs=2", "train.hyper_warmup_epochs=0",
        "train.log_every=1", "run.progress=false"]


def _sets(*pairs):
    return [a for p in pairs for a in ("--set", p)]


@pytest.mark.parametrize("method", ["hba", "stn"])
def test_search_in_stn_space_end_to_end(tmp_path, method):
    extra = ["train.method=stn", "model.strategy=all"] if method == "stn" else []
    out = tmp_path / "run"
    assert main(["search", *_sets(*TINY, *extra, f"run.out_dir={out}")]) == 0
    doc = json.loads((out / "schedule.json").read_text())
    assert doc["format"] == "hba-fast-trajectory/1" and doc["space"] == "stn-cifar"
    assert [e["epoch"] for e in doc["epochs"]] == [0, 1] and set(doc["epochs"][-1]["values"]) == set(doc["names"])
    assert (torch.tensor(doc["epochs"][-1]["lam"]) - build_space("stn-cifar").init_lam()).abs().max() > 1e-4
    final = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines()][-1]
    assert final["kind"] == "final" and final["val_loss"] > 0 and final["test_loss"] > 0
    saved = torch.load(out / "model.pt", weights_only=False)
    build_model(saved["model"], 10, "none", 15).load_state_dict(saved["state_dict"])
    if method == "hba":  # a plain net retrained at the values the search found
        assert main(["tune", "--values", str(out / "schedule.json"), "--final-epochs", "1",
                     *_sets(*TINY, f"run.out_dir={tmp_path / 'tune'}")]) == 0
        found = json.loads((tmp_path / "tune" / "values" / "result.json").read_text())
        assert found["values"] == pytest.approx(doc["epochs"][-1]["values"]) and found["test_loss"] > 0
    assert main(["plot", str(out / "schedule.json"), "--out", str(tmp_path / "t.png")]) == 0
    assert (tmp_path / "t.png").stat().st_size > 5_000
    from hba_fast.errors import ScheduleError
    from hba_fast.schedule.file import read_schedule

    with pytest.raises(ScheduleError, match="not an augmentation schedule"):
        read_schedule(out / "schedule.json")


def test_shipped_stn_config_runs_end_to_end(tmp_path):
    """configs/stn-alexnet-cifar10.yaml (STN's full-size AlexNet) on the generated dataset, two steps."""
    from pathlib import Path

    config = Path(__file__).resolve().parents[1] / "configs" / "stn-alexnet-cifar10.yaml"
    sets = ["data.dataset=shapes10", "data.num_train=64", "data.num_val=32", "data.num_test=32", "data.batch_size=16",
            "train.epochs=1", "train.steps_per_epoch=2", "train.hyper_warmup_epochs=0", "run.progress=false",
            f"run.out_dir={tmp_path}"]
    assert main(["search", str(config), *_sets(*sets)]) == 0
    assert json.loads((tmp_path / "schedule.json").read_text())["space"] == "stn-cifar"


def test_stn_method_needs_strategy_all(tmp_path, capsys):
    assert main(["search", *_sets(*TINY, "train.method=stn", f"run.out_dir={tmp_path}")]) == 2
    assert "model.strategy=all" in capsys.readouterr().err


def test_tune_random_is_resumable_per_trial(tmp_path):
    args = ["tune", "--random", "2", "--trial-epochs", "1", "--final-epochs", "1",
            *_sets(*TINY, f"run.out_dir={tmp_path}")]
    assert main(args) == 0
    report = json.loads((tmp_path / "random-search.json").read_text())
    assert len(report["trials"]) == 2 and report["best"]["values"] == report["trials"][report["best_trial"]]["values"]
    assert report["trials"][0]["values"] != report["trials"][1]["values"]
    stamp = (tmp_path / "random" / "trial0" / "result.json").stat().st_mtime_ns
    (tmp_path / "random" / "trial1" / "result.json").unlink()  # as if killed during trial 1
    assert main(args) == 0
    assert (tmp_path / "random" / "trial0" / "result.json").stat().st_mtime_ns == stamp  # read back, not rerun
    again = json.loads((tmp_path / "random-search.json").read_text())
    assert again["trials"][1]["values"] == report["trials"][1]["values"]
