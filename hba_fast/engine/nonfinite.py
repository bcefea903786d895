"""What a NaN/Inf loss means for the run and what to change: the message of `NonFiniteLossError`.

The trainer finds a non-finite loss at its log interval (no host sync per step) and stops. The message says
- where: the step and the epoch, 1-based as in the progress bar and metrics.jsonl;
- what is kept: the last checkpoint when one was written (and that resuming it with the same settings would
  diverge again, so the change goes into a new run folder), or that none was written yet;
- what to change (unless the very first step was bad: then neither the optimiser nor a checkpoint is involved):
  the optimiser settings that are far above the paper's (Table 8: lr <= 0.1, weight decay
  <= 0.01, hyper lr <= 0.03, momentum 0.9) are named first, as the likely cause; when none is, the learning rates;
  `train.amp=off` only when bf16 autocast is on.
"""
from __future__ import annotations

from pathlib import Path

# (config key, OptimConfig attribute, a value above which divergence is likely; the paper's are well below)
UNUSUAL = (("optim.lr", "lr", 0.2), ("optim.weight_decay", "weight_decay", 0.01),
           ("optim.momentum", "momentum", 0.95), ("optim.hyper_lr", "hyper_lr", 0.1))


def nonfinite_message(where: str, optim_cfg, *, searched: bool, amp: bool, checkpoint: Path,
                      saved_epoch: int | None, checkpoint_every: int, epochs: int | None = None, saved_inside: int = 0,
                      aside: Path | None = None, first_step: bool = False) -> str:
    """One line: `where` it happened, what is kept, what to change (module docstring). `epochs`: the run's
    train.epochs (its last epoch is checkpointed too). `first_step`: the loss was bad before any update, so the
    optimiser is not the cause."""
    if first_step:
        amp_off = ", or set train.amp=off (bf16 autocast is on)" if amp else ""
        return (f"{where}, before any update; the run stopped. The optimiser settings cannot be the cause: the data "
                f"or the model give a NaN/Inf loss from the start (check the dataset's pixels and labels, and the "
                f"data.* and model.* settings{amp_off})")
    high = [f"{key}={getattr(optim_cfg, attr):g} (usually <= {limit:g})" for key, attr, limit in UNUSUAL
            if (searched or attr != "hyper_lr") and getattr(optim_cfg, attr) > limit]
    if high:
        change = "lower " + ", ".join(high)
    else:
        change = f"lower optim.lr (now {optim_cfg.lr:g}, e.g. {optim_cfg.lr / 2:g})"
        if searched:
            change += f" or optim.hyper_lr (now {optim_cfg.hyper_lr:g})"
    if amp:
        change += ", or set train.amp=off (bf16 autocast is on)"
    if saved_epoch is not None:
        at = f"end of epoch {saved_epoch}" if not saved_inside else f"step {saved_inside} of epoch {saved_epoch + 1}"
        kept = (f"Its last checkpoint ({at}) is kept in {checkpoint}, but resuming it with the "
                f"same settings would diverge again: start a new run (--set run.out_dir=...) and {change}")
    else:
        first = checkpoint_every if epochs is None else min(checkpoint_every, epochs)
        kept = f"No checkpoint was written yet (the first comes at the end of epoch {first}): run again and {change}"
    earlier = f". The outputs of the earlier, shorter run are in {aside}" if aside is not None else ""
    return f"{where}; the run stopped. {kept}{earlier}"
