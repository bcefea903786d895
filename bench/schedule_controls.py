"""Control schedules for a learned schedule (the fidelity study's controls, docs/results/fidelity-1k.md): what did
the search learn?

    python bench/schedule_controls.py RUN/schedule.json OUT_DIR [--shuffle-seed 0]

writes three schedule.json files, each with the learned schedule's number of epochs, readable by `hba-fast train
--schedule` and by `compare --arms schedule:PATH`:
    OUT_DIR/prior/schedule.json     the search's initial lambda (its policy.init: the paper's puts every probability
                                    and magnitude at 0.95 lo + 0.05 hi) held for all epochs: where the search starts
    OUT_DIR/final/schedule.json     the last epoch's entry held for all epochs: the learned policy without its change
                                    over time
    OUT_DIR/shuffled/schedule.json  the learned schedule with its ops shuffled: one random permutation of the 15 ops
                                    moves each op's probability to another op (the same for both copies and every
                                    epoch), and one permutation of the 12 ops with a magnitude moves each op's
                                    magnitude, as its position in its range (0 = weakest, 1 = strongest), to another
                                    such op. Every epoch keeps its probability mass (sum of probabilities) and its
                                    magnitude mass (sum of range positions); only which op gets them changes.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from hba_fast.augment.ops import OPS
from hba_fast.augment.space import NUM_OPS, SearchSpace
from hba_fast.schedule.file import Schedule, read_schedule, write_schedule


def shuffled(probs: np.ndarray, mags: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, dict]:
    rng = np.random.default_rng(seed)
    lo = np.array([op.lo for op in OPS] * 2, dtype=np.float64)
    hi = np.array([op.hi for op in OPS] * 2, dtype=np.float64)
    with_mag = [k for k, op in enumerate(OPS) if op.has_magnitude]
    perm_p = rng.permutation(NUM_OPS)  # op k takes the probabilities of op perm_p[k]
    perm_m = dict(zip(with_mag, rng.permutation(with_mag)))  # op k takes the range position of op perm_m[k]
    unit = np.where(hi != lo, (mags - lo) / np.where(hi != lo, hi - lo, 1.0), 0.0)
    new_p, new_unit = probs.copy(), np.zeros_like(unit)
    for c in range(2):
        for k in range(NUM_OPS):
            new_p[:, c * NUM_OPS + k] = probs[:, c * NUM_OPS + perm_p[k]]
            if k in perm_m:
                new_unit[:, c * NUM_OPS + k] = unit[:, c * NUM_OPS + perm_m[k]]
    new_m = np.where(hi != lo, lo + new_unit * (hi - lo), 0.0)
    mapping = {"probability_from": {OPS[k].name: OPS[int(perm_p[k])].name for k in range(NUM_OPS)},
               "magnitude_from": {OPS[k].name: OPS[int(perm_m[k])].name for k in with_mag}}
    return new_p.astype(np.float32), new_m.astype(np.float32), mapping


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("schedule", help="the learned schedule.json")
    p.add_argument("out", help="folder for prior/, final/ and shuffled/")
    p.add_argument("--shuffle-seed", type=int, default=0)
    args = p.parse_args()
    space = SearchSpace()
    learned = read_schedule(args.schedule)
    probs, mags = learned.probs, learned.mags
    doc = json.loads(Path(args.schedule).read_text())
    epochs = len(probs)
    policy = doc.get("config", {}).get("policy", {})  # the search's own start
    lam0 = space.init_lam(init=policy.get("init", "paper"), prob=policy.get("init_prob", 0.05),
                          magnitude=policy.get("init_magnitude", 0.05))
    p0, m0 = (x.numpy() for x in space.decode(lam0))
    controls = {
        "prior": (np.repeat(p0[None], epochs, 0), np.repeat(m0[None], epochs, 0), {}),
        "final": (np.repeat(probs[-1:], epochs, 0), np.repeat(mags[-1:], epochs, 0), {}),
        "shuffled": shuffled(probs, mags, args.shuffle_seed),
    }
    for name, (cp, cm, mapping) in controls.items():
        out = Path(args.out) / name / "schedule.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        record = {"control": name, "of": str(args.schedule), "shuffle_seed": args.shuffle_seed, **mapping}
        config = {**doc.get("config", {}), "control": record}
        write_schedule(out, Schedule(cp, cm, ranges="search", source=name), config, doc.get("environment", {}))
        print(f"wrote {out}: {name}, {epochs} epochs, probability mass per epoch "
              f"{cp.sum(1).min():.3f}..{cp.sum(1).max():.3f}" + (f"; {mapping}" if mapping else ""))


if __name__ == "__main__":
    main()
