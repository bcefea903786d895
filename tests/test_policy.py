"""hba_fast.policy: the lambda parameterisation, PBA's sampling (against a plain-Python PBA), and applying draws."""
from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

from hba_fast.augment.ops import OP_INDEX, OPS, apply_op, cutout, cutout_centres, cutout_size
from hba_fast.augment.policy import PolicyDraw, apply_draw, apply_policy, sample_policy
from hba_fast.augment.space import SearchSpace

SPACE = SearchSpace()
N_STAT = 20000  # samples for the statistical tests


def images_of(cifar_mini, n: int) -> torch.Tensor:
    return torch.from_numpy(cifar_mini["train_images"][:n]).permute(0, 3, 1, 2).contiguous()


# ---------------------------------------------------------------- search space

def test_layout_and_names():
    assert SPACE.lam_dim == 54 and SPACE.num_slots == 30
    assert [OPS[k].name for k in SPACE.slot_ops[:15]] == [op.name for op in OPS]
    assert SPACE.slot_ops[15:] == SPACE.slot_ops[:15]
    names = SPACE.slot_names()
    assert len(set(names)) == 30 and names[0] == "ShearX.0" and names[29] == "Cutout.1"
    assert len(SPACE.mag_slots) == 24 and OP_INDEX["Invert"] not in [SPACE.slot_ops[j] for j in SPACE.mag_slots]


def test_decode_matches_formula_and_zero_mags():
    lam = torch.randn(5, 54, generator=torch.Generator().manual_seed(0)) * 3
    probs, mags = SPACE.decode(lam)
    assert probs.shape == (5, 30) and mags.shape == (5, 30)
    torch.testing.assert_close(probs, torch.sigmoid(lam[:, :30]))
    i = 30
    for j in range(30):  # independent walk over the slots in order
        op = OPS[j % 15]
        if op.has_magnitude:
            torch.testing.assert_close(mags[:, j], op.lo + (op.hi - op.lo) * torch.sigmoid(lam[:, i]))
            i += 1
        else:
            assert (mags[:, j] == 0).all()
    assert i == 54


def test_init_options_move_the_start_as_documented():
    """policy.init / init_prob / init_magnitude: the paper's start is their default; weak puts the enhance ops near
    their identity (and no other op moves); the fractions set the start directly."""
    paper = SPACE.init_lam()
    assert torch.equal(paper, torch.full((54,), math.log(0.05 / 0.95)))  # appendix A, bit for bit
    weak_p, weak_m = SPACE.decode(SPACE.init_lam(init="weak"))
    paper_p, paper_m = SPACE.decode(paper)
    enhance = [j for j in range(30) if OPS[j % 15].kind == "blend"]
    assert torch.allclose(weak_m[enhance], torch.full((8,), 0.955)) and torch.equal(weak_p, paper_p)
    others = [j for j in range(30) if j not in enhance]
    torch.testing.assert_close(weak_m[others], paper_m[others])
    p, m = SPACE.decode(SPACE.init_lam(prob=0.2, magnitude=0.3))
    assert torch.allclose(p, torch.full((30,), 0.2))
    for j in range(30):
        op = OPS[j % 15]
        if op.has_magnitude:
            assert m[j].item() == pytest.approx(op.lo + 0.3 * (op.hi - op.lo), rel=1e-5), op.name
    with pytest.raises(ValueError, match="init must be"):
        SPACE.init_lam(init="strong")


def test_init_lam_decodes_to_five_percent():
    probs, mags = SPACE.decode(SPACE.init_lam())
    torch.testing.assert_close(probs, torch.full((30,), 0.05))
    expected = torch.tensor([0.95 * OPS[j % 15].lo + 0.05 * OPS[j % 15].hi if OPS[j % 15].has_magnitude else 0.0
                             for j in range(30)])
    torch.testing.assert_close(mags, expected)
    assert mags[4].item() == pytest.approx(1.5) and mags[10].item() == pytest.approx(0.19)  # Rotate, Contrast


def test_encode_inverts_decode_and_clamps():
    lam = torch.randn(3, 4, 54, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 2
    back = SPACE.encode(*SPACE.decode(lam))
    torch.testing.assert_close(back, lam, rtol=1e-9, atol=1e-9)
    probs = torch.tensor([0.0, 1.0, 0.5] + [0.3] * 27)
    mags = torch.full((30,), 1e6)  # far above every range: clamped, finite
    lam2 = SPACE.encode(probs, mags)
    assert torch.isfinite(lam2).all() and lam2[0] < -10 and lam2[1] > 10
    p2, m2 = SPACE.decode(lam2)
    torch.testing.assert_close(p2[:3], torch.tensor([0.0, 1.0, 0.5]), atol=1e-5, rtol=0)
    hi = torch.tensor([OPS[j % 15].hi for j in range(30)])
    torch.testing.assert_close(m2, hi * (m2 != 0), atol=1e-3, rtol=1e-4)


def test_decode_is_differentiable_and_checks_shape():
    lam = SPACE.init_lam().requires_grad_()
    probs, mags = SPACE.decode(lam)
    (probs.sum() + mags.sum()).backward()
    assert (lam.grad != 0).all()
    with pytest.raises(ValueError, match=r"\(\.\.\., 54\)"):
        SPACE.decode(torch.zeros(53))


# ---------------------------------------------------------------- sampling, against PBA written plainly

def pba_reference(probs: list[float], rng: random.Random) -> list[int]:
    """PBA Algorithm 1 for one image: the slots applied, in order."""
    k = rng.choices([0, 1, 2], weights=[0.2, 0.3, 0.5])[0]
    order = list(range(30))
    rng.shuffle(order)
    applied = []
    for j in order:
        if len(applied) < k and rng.random() < probs[j]:
            applied.append(j)
    return applied


def test_k_distribution_with_certain_slots():
    """With every probability 1 exactly K ops are applied: P(K) = (0.2, 0.3, 0.5) within 4 standard errors."""
    draw = sample_policy(torch.ones(30), torch.zeros(30), torch.Generator().manual_seed(0), batch_size=N_STAT)
    applied = (draw.slots >= 0).sum(1)
    assert torch.equal(applied, draw.k)
    for k, p in enumerate([0.2, 0.3, 0.5]):
        rate = (draw.k == k).float().mean().item()
        assert abs(rate - p) < 4 * math.sqrt(p * (1 - p) / N_STAT), (k, rate)
    # Two distinct slots, chosen uniformly: every slot appears at position 0 at rate 0.8 / 30.
    both = draw.k == 2
    assert (draw.slots[both, 0] != draw.slots[both, 1]).all()
    counts = torch.bincount(draw.slots[:, 0][draw.slots[:, 0] >= 0], minlength=30).float() / N_STAT
    assert (counts - 0.8 / 30).abs().max() < 4 * math.sqrt(0.8 / 30 / N_STAT)


def test_slot_rates_equal_probabilities_match_analytic():
    """All slots at p: P(slot applied) = [0.3 P(N >= 1) + 0.5 (P(N = 1) + 2 P(N >= 2))] / 30, N ~ Bin(30, p)."""
    p = 0.04
    n0, n1 = (1 - p) ** 30, 30 * p * (1 - p) ** 29
    rate = (0.3 * (1 - n0) + 0.5 * (n1 + 2 * (1 - n0 - n1))) / 30
    draw = sample_policy(torch.full((N_STAT, 30), p), torch.zeros(N_STAT, 30), torch.Generator().manual_seed(1))
    hits = torch.zeros(30)
    for pos in range(2):
        s = draw.slots[:, pos]
        hits += torch.bincount(s[s >= 0], minlength=30).float()
    se = math.sqrt(rate * (1 - rate) / N_STAT)
    assert (hits / N_STAT - rate).abs().max() < 4.5 * se
    assert abs(hits.sum().item() / N_STAT / 30 - rate) < 4 * se / math.sqrt(30)


def test_slot_rates_unequal_probabilities_match_plain_pba():
    """Per-slot, per-position rates against PBA's loop with random.shuffle (two-sample test, 5 standard errors)."""
    gen = torch.Generator().manual_seed(2)
    probs = torch.rand(30, generator=gen) ** 2  # spread over [0, 1], several near 0 and a few near 1
    rng = random.Random(0)
    ref = np.zeros((2, 30))
    for _ in range(N_STAT):
        for pos, j in enumerate(pba_reference(probs.tolist(), rng)):
            ref[pos, j] += 1
    draw = sample_policy(probs, torch.zeros(30), gen, batch_size=N_STAT)
    ours = np.zeros((2, 30))
    for pos in range(2):
        s = draw.slots[:, pos]
        ours[pos] = torch.bincount(s[s >= 0], minlength=30).numpy()
    r1, r2 = ref / N_STAT, ours / N_STAT
    se = np.sqrt((r1 * (1 - r1) + r2 * (1 - r2)) / N_STAT) + 1e-4
    assert (np.abs(r1 - r2) / se).max() < 5, np.abs(r1 - r2) / se


def test_signs_magnitudes_and_ops_of_the_draw():
    gen = torch.Generator().manual_seed(3)
    mags = torch.tensor([OPS[j % 15].hi * (0.5 + j / 60) if OPS[j % 15].has_magnitude else 0.0 for j in range(30)])
    draw = sample_policy(torch.full((30,), 0.5), mags, gen, batch_size=N_STAT)
    used = draw.slots >= 0
    assert torch.equal(draw.ops[used], draw.slots[used] % 15) and (draw.ops[~used] == -1).all()
    assert (draw.mags[~used] == 0).all()
    torch.testing.assert_close(draw.mags[used].abs(), mags[draw.slots[used]])
    signed = torch.tensor([op.signed for op in OPS])[draw.ops.clamp(min=0)] & used
    neg = (draw.mags[signed] < 0).float().mean().item()
    assert abs(neg - 0.5) < 4 * math.sqrt(0.25 / signed.sum().item())
    assert (draw.mags[used & ~signed] >= 0).all()


def test_shared_and_per_sample_inputs_give_the_same_draw():
    probs, mags = SPACE.decode(torch.randn(54, generator=torch.Generator().manual_seed(4)))
    a = sample_policy(probs, mags, torch.Generator().manual_seed(5), batch_size=64)
    b = sample_policy(probs.expand(64, 30), mags.expand(64, 30), torch.Generator().manual_seed(5))
    for f in ("slots", "ops", "mags", "k"):
        assert torch.equal(getattr(a, f), getattr(b, f))
    with pytest.raises(ValueError, match="batch_size"):
        sample_policy(probs, mags)
    with pytest.raises(ValueError, match=r"\(30,\) or \(64, 30\)"):
        sample_policy(torch.zeros(64, 29), mags, batch_size=64)


# ---------------------------------------------------------------- applying draws

def covering_draw(batch: int) -> PolicyDraw:
    """Every op at both positions (and empty positions), magnitudes spread over each op's range, signs mixed."""
    ops = torch.stack([torch.arange(batch) % 16 - 1, (torch.arange(batch) * 7 + 3) % 16 - 1], 1)  # -1..14
    frac = torch.linspace(0.2, 1.0, batch)[:, None].expand(batch, 2)
    lo = torch.tensor([op.lo for op in OPS])[ops.clamp(min=0)]
    hi = torch.tensor([op.hi for op in OPS])[ops.clamp(min=0)]
    sign = torch.where(torch.arange(batch)[:, None] % 3 == 0, -1.0, 1.0)
    signed = torch.tensor([op.signed for op in OPS])[ops.clamp(min=0)]
    mags = torch.where(ops >= 0, lo + (hi - lo) * frac, 0.0) * torch.where(signed, sign, 1.0)
    slots = torch.where(ops >= 0, ops, -1)
    return PolicyDraw(slots, ops, mags.float(), (ops >= 0).sum(1))


def test_apply_draw_matches_per_image_apply_op(cifar_mini):
    x = images_of(cifar_mini, 48)
    draw = covering_draw(48)
    out = apply_draw(x, draw, generator=torch.Generator().manual_seed(6))
    g = torch.Generator().manual_seed(6)
    centres = [cutout_centres(48, 32, 32, g) for _ in range(2)]
    for i in range(48):
        ref = x[i:i + 1]
        for pos in range(2):
            op, m = int(draw.ops[i, pos]), draw.mags[i, pos:pos + 1]
            if op == OP_INDEX["Cutout"]:
                ref = cutout(ref, cutout_size(m, 32, 32), centres=centres[pos][i:i + 1])
            elif op >= 0:
                ref = apply_op(ref, OPS[op].name, m)
        assert torch.equal(out[i:i + 1], ref), (i, draw.ops[i].tolist())


def test_static_and_dynamic_apply_agree(cifar_mini):
    x = images_of(cifar_mini, 48)
    draw = covering_draw(48)
    dyn = apply_draw(x, draw, static=False, generator=torch.Generator().manual_seed(8))
    sta = apply_draw(x, draw, static=True, generator=torch.Generator().manual_seed(8))
    assert torch.equal(dyn, sta)
    probs, mags = SPACE.decode(torch.randn(48, 54, generator=torch.Generator().manual_seed(9)))
    a = apply_policy(x, probs, mags, torch.Generator().manual_seed(10), static=False)
    b = apply_policy(x, probs, mags, torch.Generator().manual_seed(10), static=True)
    assert torch.equal(a, b) and not torch.equal(a, x)


def test_apply_policy_per_sample_probabilities(cifar_mini):
    """Half the batch at p = 0 stays untouched; the other half at p = 1 gets exactly K ops (its draw)."""
    n = 64
    x = images_of(cifar_mini, n)
    probs = torch.cat([torch.zeros(n // 2, 30), torch.ones(n // 2, 30)])
    _, mags = SPACE.decode(torch.full((54,), 2.0))
    out = apply_policy(x, probs, mags, torch.Generator().manual_seed(11))
    assert out.dtype == torch.uint8 and out.shape == x.shape
    assert torch.equal(out[: n // 2], x[: n // 2])
    draw = sample_policy(probs, mags, torch.Generator().manual_seed(11), batch_size=n)
    assert (draw.slots[: n // 2] == -1).all()
    assert torch.equal((draw.slots[n // 2:] >= 0).sum(1), draw.k[n // 2:])
    changed = (out[n // 2:] != x[n // 2:]).flatten(1).any(1)
    assert torch.equal(changed, draw.k[n // 2:] > 0)  # strong magnitudes: every applied op changes the image
    g = torch.Generator().manual_seed(11)
    assert torch.equal(out, apply_draw(x, sample_policy(probs, mags, g, batch_size=n), generator=g))


@pytest.mark.gpu
def test_ops_on_gpu_match_cpu(cifar_mini):
    x = images_of(cifar_mini, 32)
    for op in OPS:
        lo, hi = (op.lo, op.hi) if op.has_magnitude else (0.0, 1.0)
        m = torch.linspace(lo, hi, 32) * (torch.where(torch.arange(32) % 2 == 0, 1.0, -1.0) if op.signed else 1.0)
        cpu = apply_op(x, op.name, m, generator=torch.Generator().manual_seed(0)) if op.name != "Cutout" else None
        gpu = apply_op(x.cuda(), op.name, m.cuda(), generator=torch.Generator("cuda").manual_seed(0))
        if cpu is not None:
            assert torch.equal(gpu.cpu(), cpu), op.name


@pytest.mark.gpu
def test_static_policy_is_sync_free_and_capturable(cifar_mini):
    """static=True runs with CUDA sync checks set to error, and inside a CUDA graph."""
    n, dev = 64, torch.device("cuda")
    x = images_of(cifar_mini, n).to(dev)
    probs = torch.cat([torch.zeros(n // 2, 30), torch.ones(n // 2, 30)]).to(dev)
    _, mags = SPACE.decode(torch.full((54,), 2.0, device=dev))
    draw = sample_policy(probs, mags, torch.Generator(dev).manual_seed(0))
    ref = apply_draw(x, draw, static=False, generator=torch.Generator(dev).manual_seed(1))
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = apply_draw(x, draw, static=True, generator=torch.Generator(dev).manual_seed(1))
        apply_policy(x, probs, mags, torch.Generator(dev).manual_seed(2), static=True)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.equal(out, ref)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        apply_policy(x, probs, mags, static=True)  # warm-up outside the capture
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = apply_policy(x, probs, mags, static=True)
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(captured[: n // 2], x[: n // 2])
    assert (captured[n // 2:] != x[n // 2:]).flatten(1).any(1).float().mean() > 0.5
