"""Why an augmentation does or does not pay off at a given size: the clean training error next to the test error
of every finished (arm, seed) run of a `hba-fast compare` folder.

Augmentation is a regulariser: it can lower the test error only where the model overfits (a training error well
below the test error). Each run's model.pt is loaded and evaluated on the clean (un-augmented) training split its
config names; the test error comes from its result.json. Output: a markdown table per arm (mean over seeds) on
stdout and, with --out, one JSON document with every run.

    PYTHONPATH=$PWD python bench/train_test_gap.py /work/runs-9/fidelity --out docs/results/fidelity-cpu-gap.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch
import yaml

from hba_fast.config import from_dict
from hba_fast.data.datasets import load_splits
from hba_fast.data.recipes import standardise
from hba_fast.models import build_model
from hba_fast.safe_load import torch_refusal


@torch.no_grad()
def clean_error(model, images: torch.Tensor, labels: torch.Tensor, mean, std, batch: int = 500) -> float:
    model.eval()
    m, s = torch.tensor(mean), torch.tensor(std)
    wrong = 0
    for i in range(0, len(labels), batch):
        logits = model(standardise(images[i:i + batch], m, s))
        wrong += int((logits.argmax(1) != labels[i:i + batch]).sum())
    return wrong / len(labels)


def load_model_file(path: Path) -> dict:
    """A run's model.pt, read with weights_only=True: a file carrying code is refused unread (hba_fast/safe_load.py)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - only a refusal gets its own line; anything else keeps its traceback
        refused = torch_refusal(e)
        if refused is None:
            raise
        sys.exit(f"train_test_gap: {path} is refused: it holds {refused}, which a model.pt never holds (nothing of "
                 f"it ran)")


def run_train_error(run: Path, splits_cache: dict) -> float:
    """The clean training error of a compare run's model.pt on the training split its config.yaml names (splits are
    cached by their data config across runs)."""
    raw = yaml.safe_load((run / "config.yaml").read_text())
    cfg = from_dict({k: v for k, v in raw.items() if k != "evaluate"})
    key = json.dumps(raw["data"], sort_keys=True)
    if key not in splits_cache:
        splits_cache[key] = load_splits(cfg.data)
    splits = splits_cache[key]
    saved = load_model_file(run / "model.pt")
    model = build_model(saved["model"], saved["num_classes"], "none")
    model.load_state_dict(saved["state_dict"])
    return clean_error(model, splits.train.images, splits.train.labels, splits.mean, splits.std)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("folder", help="a compare folder (<arm>/seed<k>/ runs)")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    torch.set_num_threads(1)
    runs, splits_cache = [], {}
    for result_file in sorted(Path(args.folder).glob("*/seed*/result.json")):
        run = result_file.parent
        result = json.loads(result_file.read_text())
        train_error = run_train_error(run, splits_cache)
        runs.append({"arm": run.parent.name, "seed": run.name, "train_error": round(train_error, 4),
                     "test_error": result["test_error"], "gap": round(result["test_error"] - train_error, 4)})
        print(json.dumps(runs[-1]), flush=True)
    print("\n| arm | clean train error % | test error % | gap (test - train) % |")
    print("|---|---|---|---|")
    for arm in dict.fromkeys(r["arm"] for r in runs):
        rs = [r for r in runs if r["arm"] == arm]
        tr = statistics.fmean(r["train_error"] for r in rs)
        te = statistics.fmean(r["test_error"] for r in rs)
        print(f"| {arm} | {100 * tr:.2f} | {100 * te:.2f} | {100 * (te - tr):.2f} |")
    if args.out:
        Path(args.out).write_text(json.dumps({"folder": args.folder, "runs": runs}, indent=1) + "\n")


if __name__ == "__main__":
    main()
