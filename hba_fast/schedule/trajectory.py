"""The per-epoch trajectory of a non-PBA search space's hyperparameters: its schedule.json and its plot.

A search in PBA's space writes schedule.json in its own format (file.py, "hba-fast-schedule/1"), unchanged. A search
in another space of the registry (augment/spaces.py, e.g. `stn-cifar`) writes the same per-epoch structure with
its own names (format "hba-fast-trajectory/1"):

    {"format", "space": name, "names": [H names],
     "epochs": [{"epoch": e, "lam": [H unbounded entries], "values": {name: value}}, ...],
     "config": {resolved config}, "environment": {versions, device, git sha}}
Each epoch's entry is lambda averaged over the epoch's hyper steps, its values as the consumers apply them
(discrete ones floored). `hba-fast plot` draws it: one panel per consumer group (dropout rates, jitter, the rest),
value against epoch. A trajectory is not an augmentation schedule: `hba-fast train --schedule` refuses it.
"""
from __future__ import annotations

import json
from pathlib import Path

from .. import atomic
from ..errors import ScheduleError

FORMAT = "hba-fast-trajectory/1"


def write_trajectory(path: str | Path, space_name: str, names: list[str], entries: list[dict], config: dict,
                     environment: dict) -> None:
    doc = {"format": FORMAT, "space": space_name, "names": list(names),
           "epochs": [{"epoch": e["epoch"], "lam": list(e["lam"]), "values": dict(e["values"])} for e in entries],
           "config": config, "environment": environment}
    atomic.write_text(path, json.dumps(doc, indent=1) + "\n")


def read_trajectory(path: str | Path) -> dict:
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ScheduleError(f"cannot read {path} as a trajectory ({e}); give the schedule.json of a search run") \
            from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ScheduleError(f"{path} is not a hyperparameter trajectory (format {FORMAT!r})")
    names = doc.get("names")
    for entry in doc.get("epochs", []):
        if set(entry.get("values", {})) != set(names):
            raise ScheduleError(f"{path}: epoch {entry.get('epoch')} does not hold the values of {names}")
    return doc


def is_trajectory(path: str | Path) -> bool:
    """True when `path` is a JSON file of this format (cheap look at its head)."""
    try:
        with open(path, encoding="utf-8") as f:
            head = f.read(200)
    except OSError:
        return False
    return f'"format": "{FORMAT}"' in head


def _group(name: str) -> str:
    if "dropout" in name:
        return "dropout rates"
    if name in ("hue", "sat", "bright", "contrast"):
        return "colour jitter"
    return "other"


def plot_trajectory(path: str | Path, doc: dict, title: str | None = None) -> None:
    """One panel per group of hyperparameters: value against epoch (1-based), a line per hyperparameter; written
    atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names, entries = doc["names"], doc["epochs"]
    groups: dict[str, list[str]] = {}
    for n in names:
        groups.setdefault(_group(n), []).append(n)
    fig, axes = plt.subplots(1, len(groups), figsize=(5 * len(groups), 3.6), squeeze=False)
    epochs = [e["epoch"] + 1 for e in entries]
    for ax, (group, members) in zip(axes[0], groups.items(), strict=True):
        for n in members:
            ax.plot(epochs, [e["values"][n] for e in entries], marker="." if len(epochs) < 30 else None, label=n)
        ax.set_title(group)
        ax.set_xlabel("epoch")
        ax.legend(fontsize=7)
    fig.suptitle(title or f"{doc['space']}: hyperparameters per epoch")
    fig.tight_layout()
    atomic.save_figure(path, fig)  # closes the figure
