"""hba_fast.mixed_ops, the policy's static form: its torch passes identical to each op's own function (bit-exact with
Pillow) and to the indexed form on real CIFAR-10 images, every op at many magnitudes; against Pillow directly for a
sample of draws; its Triton kernels identical to the torch passes (TRITON_INTERPRET on the CPU, kept small: the
interpreter runs a batch of 32 images in about 4 s; and on a GPU); the same work whatever was drawn, with no host
reads; `data.policy_form` reaching the torch pipeline."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils._python_dispatch import TorchDispatchMode

from hba_fast.augment.ops import CUTOUT_FILL, OP_INDEX, OPS, apply_op, cutout, cutout_centres, cutout_size
from hba_fast.augment.policy import _apply_position_indexed, apply_draw, apply_policy, sample_policy, static_form
from hba_fast.augment.space import SearchSpace
from hba_fast.augment.static import apply_mixed, apply_positions, mixed_params
from hba_fast.config import load_config
from hba_fast.errors import ConfigError

N = 96  # images per op: one magnitude each, both ends of the range included


def images_of(cifar_mini, n: int, split: str = "train", offset: int = 0) -> torch.Tensor:
    return torch.from_numpy(cifar_mini[f"{split}_images"][offset:offset + n]).permute(0, 3, 1, 2).contiguous()


def spread(name: str, n: int, seed: int = 0) -> torch.Tensor:
    """n magnitudes over the op's whole range (ends included), shuffled; signed ops alternate the sign."""
    op = OPS[OP_INDEX[name]]
    lo, hi = (op.lo, op.hi) if op.has_magnitude else (0.0, 1.0)
    m = torch.linspace(lo, hi, n)[torch.randperm(n, generator=torch.Generator().manual_seed(seed))]
    return m * torch.tensor([1.0, -1.0]).repeat(n)[:n] if op.signed else m


def mixed(images, op, mag, centres, impl="torch"):
    return apply_mixed(images, mixed_params(op, mag, *images.shape[2:]), centres, impl)


def reference(images: torch.Tensor, op: torch.Tensor, mag: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """Each image through its own op's function (hba_fast.ops, bit-exact with Pillow), one image at a time."""
    out = images.clone()
    for i in range(len(images)):
        k, m = int(op[i]), mag[i:i + 1]
        if k == OP_INDEX["Cutout"]:
            out[i:i + 1] = cutout(images[i:i + 1], cutout_size(m, *images.shape[2:]), centres=centres[i:i + 1])
        elif k >= 0:
            out[i:i + 1] = apply_op(images[i:i + 1], OPS[k].name, m)
    return out


def random_draw(n: int, h: int, w: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """op (n,) in -1..14, magnitudes anywhere in each op's range with random signs, Cutout centres."""
    g = torch.Generator().manual_seed(seed)
    op = torch.randint(-1, len(OPS), (n,), generator=g)
    lo = torch.tensor([o.lo for o in OPS])[op.clamp(min=0)]
    hi = torch.tensor([o.hi for o in OPS])[op.clamp(min=0)]
    signed = torch.tensor([o.signed for o in OPS])[op.clamp(min=0)]
    mag = lo + (hi - lo) * torch.rand(n, generator=g)
    mag = torch.where(signed & (torch.rand(n, generator=g) < 0.5), -mag, mag)
    return op, mag, cutout_centres(n, h, w, g)


@pytest.mark.parametrize("name", [op.name for op in OPS])
def test_each_op_matches_its_function_at_many_magnitudes(cifar_mini, name):
    """All images draw `name` (every 7th draws nothing), N magnitudes over the range: equal to ops' own function."""
    x = images_of(cifar_mini, N)
    op = torch.full((N,), OP_INDEX[name])
    op[::7] = -1
    mag = spread(name, N)
    centres = cutout_centres(N, 32, 32, torch.Generator().manual_seed(1))
    out = mixed(x, op, mag, centres)
    if name == "Cutout":
        ref = cutout(x, cutout_size(mag, 32, 32), centres=centres)
    else:
        ref = apply_op(x, name, mag)
    ref = torch.where((op >= 0)[:, None, None, None], ref, x)
    bad = (out != ref).flatten(1).any(1).nonzero().flatten().tolist()
    assert bad == [], [(i, float(mag[i])) for i in bad]


@pytest.mark.parametrize("size", [(32, 32), (24, 32), (31, 20), (3, 2), (1, 1)])
def test_mixed_batches_match_per_image_functions_and_indexed_form(cifar_mini, size):
    """Every image its own op and magnitude (and odd sizes: axes, centres, SMOOTH's border); two seeds."""
    h, w = size
    x = images_of(cifar_mini, 160, "val")[:, :, :h, :w].contiguous()
    for seed in (0, 1):
        op, mag, centres = random_draw(len(x), h, w, seed)
        out = mixed(x, op, mag, centres)
        assert torch.equal(out, _apply_position_indexed(x, op, mag, centres, None))
        if seed == 0:
            assert torch.equal(out, reference(x, op, mag, centres))


def test_mixed_batch_matches_pillow(cifar_mini):
    """A sample of draws against Pillow itself (the reference of tests/test_ops.py) and a numpy Cutout."""
    from test_ops import pil_reference

    x = images_of(cifar_mini, 120, "test")
    op, mag, centres = random_draw(len(x), 32, 32, seed=2)
    out = mixed(x, op, mag, centres).permute(0, 2, 3, 1).numpy()
    hwc = x.permute(0, 2, 3, 1).numpy()
    for i in range(len(x)):
        k, m = int(op[i]), float(mag[i])
        if k < 0:
            ref = hwc[i]
        elif OPS[k].name == "Cutout":
            side = round(m * 32)
            ref = hwc[i].copy()
            top, left = int(centres[i, 0]) - side // 2, int(centres[i, 1]) - side // 2
            ref[max(top, 0):max(top + side, 0), max(left, 0):max(left + side, 0)] = CUTOUT_FILL
        else:
            ref = np.asarray(pil_reference(OPS[k].name, Image.fromarray(hwc[i]), m))
        np.testing.assert_array_equal(out[i], ref, err_msg=f"image {i}: {OPS[k].name if k >= 0 else None} m={m}")


def test_whole_policies_static_equals_indexed(cifar_mini):
    """Two positions chained (a geometric op's fill then a table op, ...), per-sample lambda, three seeds."""
    x = images_of(cifar_mini, 128, offset=200)
    space = SearchSpace()
    for seed in range(3):
        probs, mags = space.decode(torch.randn(128, 54, generator=torch.Generator().manual_seed(seed)) * 2 + 1)
        g = torch.Generator().manual_seed(10 + seed)
        draw = sample_policy(probs, mags, g)
        assert (draw.k == 2).any() and ((draw.ops >= 0).sum(1) == 2).sum() > 20
        static = apply_draw(x, draw, static=True, generator=torch.Generator().manual_seed(seed))
        indexed = apply_draw(x, draw, static=False, generator=torch.Generator().manual_seed(seed))
        assert torch.equal(static, indexed)
        assert not torch.equal(static, x)


def degenerate_images(cifar_mini, n: int) -> torch.Tensor:
    """Real images plus the cases of Pillow's special branches: a flat image (AutoContrast / Equalize leave it),
    a two-level one, one with a single pixel in the top bin (Equalize's step 0), one channel flat."""
    x = images_of(cifar_mini, n - 4, "train", offset=1000)
    flat = torch.full((1, 3, 32, 32), 77, dtype=torch.uint8)
    two = torch.zeros(1, 3, 32, 32, dtype=torch.uint8)
    two[:, :, :10] = 200
    one_off = torch.full((1, 3, 32, 32), 10, dtype=torch.uint8)
    one_off[:, :, 0, 0] = 250
    half_flat = x[:1].clone()
    half_flat[:, 1] = 5
    return torch.cat([x, flat, two, one_off, half_flat])


def covering(n: int, h: int, w: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every op (and none) in turn, magnitudes at both ends and inside the range, mixed signs; Cutout centres."""
    op = torch.arange(n) % (len(OPS) + 1) - 1
    g = torch.Generator().manual_seed(seed)
    lo = torch.tensor([o.lo for o in OPS])[op.clamp(min=0)]
    hi = torch.tensor([o.hi for o in OPS])[op.clamp(min=0)]
    frac = torch.rand(n, generator=g)
    frac[: n // 3] = 1.0  # the strongest magnitude
    frac[n // 3: n // 2] = 0.0
    mag = lo + (hi - lo) * frac
    mag = torch.where(torch.rand(n, generator=g) < 0.5, -mag, mag)  # unsigned ops ignore a sign: fine either way
    return op, mag.abs() * torch.where(torch.tensor([o.signed for o in OPS])[op.clamp(min=0)], mag.sign(), 1.0), \
        cutout_centres(n, h, w, g)


def test_triton_pass_matches_torch_passes(cifar_mini):
    """The fused kernels (interpreter) against the torch passes: all ops, both ends of every range, Pillow's
    special branches (flat channels), 32x32 and an odd non-square size."""
    x = degenerate_images(cifar_mini, 48)
    op, mag, centres = covering(48, 32, 32, seed=3)
    op[-4:] = torch.tensor([OP_INDEX["AutoContrast"], OP_INDEX["Equalize"], OP_INDEX["Equalize"],
                            OP_INDEX["AutoContrast"]])
    assert torch.equal(mixed(x, op, mag, centres, "triton"), mixed(x, op, mag, centres, "torch"))
    small = images_of(cifar_mini, 17, "test")[:, :, 3:26, 5:30].contiguous()  # 23 x 25
    op, mag, centres = covering(17, 23, 25, seed=4)
    assert torch.equal(mixed(small, op, mag, centres, "triton"), mixed(small, op, mag, centres, "torch"))


def test_triton_positions_match_indexed_policy(cifar_mini):
    """Two positions chained through the kernels equal the indexed form of hba_fast.policy."""
    x = images_of(cifar_mini, 24, offset=500)
    probs, mags = SearchSpace().decode(torch.full((24, 54), 1.5))
    g = torch.Generator().manual_seed(5)
    draw = sample_policy(probs, mags, g)
    centres = [cutout_centres(24, 32, 32, g) for _ in range(2)]
    out = apply_positions(x, draw.ops, draw.mags, centres, impl="triton")
    ref = x
    for pos in range(2):
        ref = _apply_position_indexed(ref, draw.ops[:, pos], draw.mags[:, pos], centres[pos], None)
    assert torch.equal(out, ref) and not torch.equal(out, x)


def test_impl_choice_is_the_kernels_one(monkeypatch):
    """mixed_ops decides with the kernels' `use_triton`: "auto" keeps uint8 CPU images on the torch passes,
    "triton" without the interpreter raises TritonUnavailableError (a ValueError) naming the fix."""
    from hba_fast.kernels.triton_support import TritonUnavailableError, triton

    x = torch.zeros(2, 3, 8, 8, dtype=torch.uint8)
    op, mag, centres = torch.tensor([OP_INDEX["Invert"], -1]), torch.zeros(2), torch.zeros(2, 2, dtype=torch.long)
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert torch.equal(mixed(x, op, mag, centres, impl="auto")[0], torch.full((3, 8, 8), 255, dtype=torch.uint8))
    if triton is not None:
        with pytest.raises(TritonUnavailableError, match=r"static\(impl='triton'\) needs CUDA tensors"):
            mixed(x, op, mag, centres, impl="triton")
    with pytest.raises(ValueError, match="static: impl must be one of"):
        mixed(x, op, mag, centres, impl="cuda")


@pytest.mark.gpu
def test_triton_pass_on_gpu_matches_cpu(cifar_mini):
    """On a GPU: the kernels (auto picks them on CUDA) equal the torch passes on the CPU, and so Pillow; 2,000
    images, every op at many magnitudes; odd sizes too."""
    for n, h, w, seed in ((2000, 32, 32, 0), (300, 23, 25, 1), (64, 3, 2, 2)):
        x = degenerate_images(cifar_mini, n)[:, :, :h, :w].contiguous()
        op, mag, centres = covering(n, h, w, seed)
        cpu = mixed(x, op, mag, centres, "torch")
        gpu = mixed(x.cuda(), op.cuda(), mag.cuda(), centres.cuda(), "auto")
        bad = (gpu.cpu() != cpu).flatten(1).any(1)
        assert not bad.any(), [(OPS[k].name if k >= 0 else None, float(m)) for k, m in zip(op[bad], mag[bad])][:10]
        torch_gpu = mixed(x.cuda(), op.cuda(), mag.cuda(), centres.cuda(), "torch")
        assert torch.equal(torch_gpu.cpu(), cpu)


class _Recorder(TorchDispatchMode):
    """Every aten call (name, output shapes and dtypes) made under it."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        outs = out if isinstance(out, (tuple, list)) else (out,)
        self.calls.append((func.overloadpacket.__name__,
                           tuple((tuple(o.shape), o.dtype) for o in outs if isinstance(o, torch.Tensor))))
        return out


HOST_READS = {"_local_scalar_dense", "item", "nonzero", "unique", "_unique", "_unique2", "masked_select",
              "is_nonzero", "equal"}


def test_static_form_does_the_same_work_whatever_was_drawn(cifar_mini):
    """The same aten calls with the same shapes for very different draws, none of which reads a value to the host
    (so no sync and no Python branch on data); the indexed form does read (the contrast this form removes)."""
    x = images_of(cifar_mini, 64)
    space = SearchSpace()
    policies = [space.decode(torch.full((54,), v)) for v in (-20.0, 0.0, 20.0)]  # p ~ 0, p = 0.5, p ~ 1
    apply_policy(x, *policies[0], static=True)  # warm-up: the first call makes the per-op tables (mixed_ops._lookup)
    traces = []
    for probs, mags in policies:
        with _Recorder() as rec:
            apply_policy(x, probs, mags, torch.Generator().manual_seed(0), static=True)
        traces.append(rec.calls)
        assert not HOST_READS & {name for name, _ in rec.calls}, HOST_READS & {name for name, _ in rec.calls}
    assert traces[0] == traces[1] == traces[2]
    with _Recorder() as rec:
        apply_policy(x, *policies[2], torch.Generator().manual_seed(0), static=False)
    assert HOST_READS & {name for name, _ in rec.calls}


def test_policy_form_choice_and_config():
    assert static_form("static", "cpu") and not static_form("indexed", "cuda")
    assert static_form("auto", "cuda") and not static_form("auto", "cpu")
    with pytest.raises(ValueError, match="auto, static, indexed"):
        static_form("fast", "cpu")
    assert load_config(None, ["data.policy_form=static"]).data.policy_form == "static"
    assert load_config(None, []).data.policy_form == "auto"
    with pytest.raises(ConfigError, match="policy_form"):
        load_config(None, ["data.policy_form=graph"])


def test_torch_pipeline_forms_give_identical_batches():
    """data.policy_form reaches TorchPipeline.augment; both forms give the same augmented batches."""
    from test_torch_pipeline import make_cfg, make_splits

    from hba_fast.data.torch_pipeline import TorchPipeline
    from hba_fast.engine.hyperparams import SearchSampler

    batches = {}
    for form in ("static", "indexed"):
        cfg = make_cfg(recipe="cifar", image_size=16, policy_form=form)
        sampler = SearchSampler(torch.full((54,), 1.0), 0.5, SearchSpace(), generator=torch.Generator().manual_seed(4))
        pipe = TorchPipeline(cfg, make_splits(), sampler, "cpu", seed=3)
        assert pipe.static_policy == (form == "static")
        batches[form] = [b.images for b in pipe.train_epoch(0)]
    assert len(batches["static"]) == 5
    assert all(torch.equal(a, b) for a, b in zip(batches["static"], batches["indexed"]))
