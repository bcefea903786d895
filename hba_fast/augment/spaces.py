"""Search spaces as a registry: what lambda holds, entry by entry (config `policy.space`; issue 19).

    SPACES["pba"]        PBA's 54-entry augmentation space (`space.SearchSpace`: 30 slot probabilities, 24
                         magnitudes); the default, unchanged: its schedule.json, policy and plots are PBA's.
    SPACES["stn-cifar"]  STN's 15 regularisation hyperparameters for AlexNet on CIFAR-10 (`stn_space.py`):
                         8 dropout rates and 7 augmentation hyperparameters (paper 4.3, Table 6).

A non-PBA space is a `TableSpace` (table_space.py): a tuple of `Hyperparameter` records, each with its name,
range, transform (logit / log), initial value, discreteness and consumer (`input` or `model`).

Every space offers what lambda's machinery (`engine/hyperparams.py`) needs, whatever the space:
    name, lam_dim, entry_names()            the length of lambda and a name per entry
    init_lam(device, ...)                   lambda at the search's start
    policy_sample(lam_i)                    what the data pipeline gets for lambda_i (B, lam_dim): PBA's per-sample
                                            probabilities and magnitudes, or, for a table space, lambda_i alone
                                            (its consumers apply it on the device: models/regularised.py)
    schedule_entry(epoch, lam)              one epoch's entry of the per-epoch trajectory (schedule.json)
A table space also has `values(lam)`: lam (..., H) -> the hyperparameters' values (..., H), differentiable
(discrete ones are floored by `used_values`, which is what the consumers apply).
"""
from __future__ import annotations

import difflib

from .space import SearchSpace
from .stn_space import stn_cifar_space
from .table_space import TableSpace

SPACES = ("pba", "stn-cifar")  # config policy.space; `build_space` makes them


def build_space(name: str) -> SearchSpace | TableSpace:
    """The search space registered under `name` (config policy.space)."""
    if name == "pba":
        return SearchSpace()
    if name == "stn-cifar":
        return stn_cifar_space()
    near = difflib.get_close_matches(str(name), SPACES, n=1, cutoff=0.0)
    raise ValueError(f"unknown search space {name!r}: valid spaces are {', '.join(SPACES)}"
                     f"{f'; did you mean {near[0]!r}?' if near else ''}")
