"""A schedule's Figure 4 as a markdown table, for a results doc that commits no images.

    PYTHONPATH=$PWD python bench/schedule_text.py SCHEDULE [--epochs 1,25,50,75,100] [--title T]

SCHEDULE is anything `read_schedule` takes (a schedule.json, a run folder, pba:FILE). For each chosen epoch: each
op's probability summed over its two copies (Figure 4b) and its magnitude as a position in its range (Figure 4c:
0 weakest, 1 strongest; the enhance ops by distance from their identity 1.0; weighted by the copies'
probabilities), then the sum of the 24 normalised magnitudes (Figure 4a) and the expected number of ops an image
gets. The numbers are the ones `hba-fast plot` draws (`schedule.plot.op_tables`).
"""
from __future__ import annotations

import argparse
import math

from hba_fast.augment.ops import OPS
from hba_fast.augment.pba_draw import pba_law
from hba_fast.schedule.file import read_schedule
from hba_fast.schedule.plot import op_tables


def schedule_markdown(path: str, epochs: list[int], title: str | None = None) -> str:
    schedule = read_schedule(path)
    n = len(schedule.probs)
    epochs = [e for e in epochs if 1 <= e <= n] or [1, n]
    total, op_prob, strength = op_tables(schedule.probs, schedule.mags)
    head = " | ".join(f"ep {e}" for e in epochs)
    lines = [f"**{title or path}** ({n} epochs; each cell: probability (both copies) / magnitude position)", "",
             f"| op | {head} |", "|---|" + "---|" * len(epochs)]
    for k, op in enumerate(OPS):
        cells = []
        for e in epochs:
            s = strength[e - 1, k]
            cells.append(f"{op_prob[e - 1, k]:.2f}" + ("" if math.isnan(s) else f" / {s:.2f}"))
        lines.append(f"| {op.name} | " + " | ".join(cells) + " |")
    lines.append("| sum of magnitudes (of 24) | " + " | ".join(f"{total[e - 1]:.2f}" for e in epochs) + " |")
    ops = []
    for e in epochs:
        law = pba_law(schedule.probs[e - 1])
        ops.append(f"{law.single.sum() + 2 * law.pair.sum():.2f}")
    lines.append("| expected ops per image | " + " | ".join(ops) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("schedule")
    parser.add_argument("--epochs", default="1,25,50,75,100", help="comma-separated epochs (1-based)")
    parser.add_argument("--title")
    args = parser.parse_args()
    print(schedule_markdown(args.schedule, [int(e) for e in args.epochs.split(",")], args.title))


if __name__ == "__main__":
    main()
