"""PBA's per-image draw outside torch: a numpy sampler (one image at a time) and its exact law.

The rule (PBA Algorithm 1, SPEC 3; `hba_fast.augment.policy.sample_policy` is the batched torch form): draw K from
{0: 0.2, 1: 0.3, 2: 0.5}; walk the 30 slots in a fresh random order; at each slot, while fewer than K ops were
applied, apply the slot's op with its probability p_j and magnitude m_j (a random sign for the signed ops).

    draw_pba(probs (30,), mags (30,), rng) -> ((op, signed magnitude), ...)    0, 1 or 2 ops, in order
    draw_subpolicy(subpolicies, rng) -> same      AutoAugment's rule: one sub-policy uniformly, each of its two
                                                  ops with its own probability
    pba_law(probs (30,)) -> Law(none, single (30,), pair (30, 30))   the exact probabilities of the draw's slots

The law follows from giving every slot an independent uniform arrival time t (a random order): slot a is the
first accepted when it is accepted and every slot arriving before it is rejected, so with K = 1
    P(a) = p_a * int_0^1 prod_{i != a} (1 - p_i t) dt,
with K = 2 the ordered pair (a, b) is applied with
    P(a, b) = p_a p_b * int_0^1 t prod_{i != a, b} (1 - p_i t) dt        (a arrives before b: the factor t)
and a alone when no other slot is accepted, p_a prod_{i != a} (1 - p_i). The integrands are polynomials of degree
<= 30, so 32-point Gauss-Legendre quadrature is exact. The law is what the Albumentations export writes and what
the tests hold the three application paths to.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from .ops import OPS
from .space import NUM_OPS, NUM_SLOTS

MAX_OPS = 2  # at most two ops per image
K_PROBS = (0.2, 0.3, 0.5)  # P(K = 0), P(K = 1), P(K = 2)

_SIGNED = np.array([op.signed for op in OPS])  # (15,)
_HAS_MAG = np.array([op.has_magnitude for op in OPS])  # (15,)

Draw = tuple[tuple[int, float], ...]  # the ops applied to one image, in order: (op index, signed magnitude)


def draw_pba(probs: np.ndarray, mags: np.ndarray, rng: np.random.Generator) -> Draw:
    """PBA's draw for one image from probs, mags (30,) (module docstring)."""
    u = rng.random()
    k = int(u >= K_PROBS[0]) + int(u >= K_PROBS[0] + K_PROBS[1])
    if k == 0:
        return ()
    order = rng.permutation(NUM_SLOTS)  # (30,)
    accepted = order[rng.random(NUM_SLOTS) < probs[order]][:k]
    return tuple(_signed(int(j) % NUM_OPS, float(mags[j]), rng) for j in accepted)


def draw_subpolicy(subpolicies: Sequence[Sequence[tuple[int, float, float]]], rng: np.random.Generator) -> Draw:
    """AutoAugment's draw for one image: a uniformly chosen sub-policy ((op, prob, magnitude), ...), each op
    applied with its probability, in order (a random sign for the signed ops)."""
    sub = subpolicies[int(rng.integers(len(subpolicies)))]
    out = []
    for op, p, m in sub:
        if rng.random() < p:
            out.append(_signed(int(op), float(m), rng))
    return tuple(out)


def _signed(op: int, m: float, rng: np.random.Generator) -> tuple[int, float]:
    if not _HAS_MAG[op]:
        return op, 0.0
    if _SIGNED[op] and rng.random() < 0.5:
        return op, -m
    return op, m


class Law(NamedTuple):
    """Exact probabilities of PBA's draw: nothing, one slot alone, an ordered pair of slots (sums to 1)."""

    none: float
    single: np.ndarray  # (30,) P(only slot a is applied)
    pair: np.ndarray  # (30, 30) P(slot a, then slot b); 0 on the diagonal

    def op_rates(self) -> tuple[np.ndarray, np.ndarray]:
        """P(op k is applied first), P(op k is applied second): (15,) each."""
        first = self.single + self.pair.sum(1)  # (30,)
        second = self.pair.sum(0)  # (30,)
        return first.reshape(2, NUM_OPS).sum(0), second.reshape(2, NUM_OPS).sum(0)


def pba_law(probs: np.ndarray) -> Law:
    """The exact law of `draw_pba`'s slots for probs (30,) (module docstring)."""
    p = np.asarray(probs, np.float64).reshape(NUM_SLOTS)
    t, w = np.polynomial.legendre.leggauss(32)
    t, w = (t + 1.0) / 2.0, w / 2.0  # nodes and weights on [0, 1]
    eye = np.eye(NUM_SLOTS, dtype=bool)
    factors = 1.0 - p[:, None] * t[None, :]  # (30, T): 1 - p_i t
    without_a = np.where(eye[:, :, None], 1.0, factors[None]).prod(1)  # (30, T): prod over i != a
    k1 = p * (without_a @ w)  # (30,) P(a first | K = 1)
    skip = eye[:, None, :] | eye[None, :, :]  # (30, 30, 30): i == a or i == b
    without_ab = np.where(skip[..., None], 1.0, factors[None, None]).prod(2)  # (30, 30, T)
    pair = p[:, None] * p[None, :] * (without_ab @ (w * t))  # (30, 30)
    np.fill_diagonal(pair, 0.0)
    nothing = float(np.prod(1.0 - p))
    alone = p * np.where(eye, 1.0, (1.0 - p)[None, :]).prod(1)  # (30,) p_a prod_{i != a} (1 - p_i)
    k0, k1p, k2p = K_PROBS
    return Law(none=k0 + (k1p + k2p) * nothing, single=k1p * k1 + k2p * alone, pair=k2p * pair)
