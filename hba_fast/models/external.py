"""Models from other libraries by name: `model.name: torchvision:resnet18` or `timm:resnet26d` in a config.

    build_external("torchvision:resnet18", num_classes=10, checkpoint=None) -> the library's nn.Module
    is_external(name) -> bool

Any name the library registers (`torchvision.models.list_models()`, `timm.list_models()`), built with the
dataset's number of classes and no pretrained weights: nothing is downloaded. `checkpoint` (`model.checkpoint`)
is a local file of weights to start from: a state dict, or a dict holding one under "state_dict" / "model", read
with torch.load(weights_only=True) (nothing in it runs; a file that would run code is refused with one line);
tensors whose shape does not fit (a classifier trained for another number of classes) are left at their fresh
initialisation and reported. `hba_fast.hyperize` then turns the model into the search's hypernetwork
(`registry.build_model` does both). `load_checkpoint_weights` serves the built-in models too (registry.build_model).
"""
from __future__ import annotations

import difflib
import logging
from pathlib import Path

import torch
from torch import nn

from ..errors import ConfigError
from ..safe_load import torch_refusal

log = logging.getLogger(__name__)  # in a run: to its log.txt and stdout (RunLog.forward_logging)

PREFIXES = ("torchvision:", "timm:")


def is_external(name: object) -> bool:
    return isinstance(name, str) and name.startswith(PREFIXES) and len(name.split(":", 1)[1]) > 0


class ModelNames(tuple):
    """The registry's names, plus any `torchvision:NAME` / `timm:NAME` (checked when the model is built)."""

    def __contains__(self, name: object) -> bool:
        return tuple.__contains__(self, name) or is_external(name)


def _library(prefix: str):
    module = {"torchvision": "torchvision.models", "timm": "timm"}[prefix]
    try:
        return __import__(module, fromlist=["_"])
    except ImportError as e:
        raise ConfigError(f"model.name={prefix}:... needs the {prefix} package ({e}); install it with "
                          f"`pip install {prefix}` (or `pip install -e .[models]`)") from None


def build_external(name: str, num_classes: int, checkpoint: str | None = None) -> nn.Module:
    prefix, arch = name.split(":", 1)
    lib = _library(prefix)
    available = lib.list_models()
    if arch not in available:
        near = difflib.get_close_matches(arch, available, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(f'{prefix}:{n}' for n in near)}?" if near else ""
        raise ConfigError(f"{prefix} has no model {arch!r}{hint} (list them with {prefix}"
                          f"{'.models' if prefix == 'torchvision' else ''}.list_models())")
    if prefix == "torchvision":
        model = lib.get_model(arch, weights=None, num_classes=num_classes)
    else:
        model = lib.create_model(arch, pretrained=False, num_classes=num_classes)
    if checkpoint is not None:
        load_checkpoint_weights(model, checkpoint)
    return model


def load_checkpoint_weights(model: nn.Module, path: str) -> list[str]:
    """Load a local state dict into `model`, skipping tensors of another shape; returns the skipped keys."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"model.checkpoint {str(file)!r} not found; give a local .pt/.pth file of weights "
                          f"(nothing is downloaded), or model.checkpoint=null")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)  # nothing in it runs (safe_load.py)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the user's to fix
        refused = torch_refusal(e)
        if refused:
            raise ConfigError(f"model.checkpoint {file} holds {refused}, which weights never hold; it was refused "
                              f"unread (only tensors and plain data are loaded): give a file of weights (a state "
                              f"dict saved with torch.save)") from None
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise ConfigError(f"model.checkpoint {file} could not be read as torch weights ({type(e).__name__}: "
                          f"{first})") from None
    if not isinstance(state, dict):
        raise ConfigError(f"model.checkpoint {file} holds a {type(state).__name__}, not a state dict of weights; "
                          f"save one with torch.save(model.state_dict(), file)")
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    own = model.state_dict()
    fits = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    skipped = sorted(k for k in state if k not in fits)
    if not fits:
        raise ConfigError(f"model.checkpoint {file}: none of its {len(state)} tensors fit {type(model).__name__} "
                          f"(is it a checkpoint of this architecture?)")
    model.load_state_dict(fits, strict=False)
    fresh = len(own) - len(fits)
    log.info(f"model.checkpoint: {len(fits)} tensor(s) loaded from {file}"
             + (f"; {fresh} of the model's {len(own)} keep their initialisation" if fresh else ""))
    if skipped:
        log.warning(f"model.checkpoint: {len(skipped)} tensor(s) of another shape or name left at their "
                    f"initialisation: {', '.join(skipped[:6])}{' ...' if len(skipped) > 6 else ''}")
    return skipped
