"""hba-fast: Hypernetwork-Based Augmentation search (Lin et al., "Hypernetwork-Based Augmentation").

The house, one package per idea (docs/ARCHITECTURE.md is the map): the verbs `search`, `train`, `compare` (and the
command line, `cli`) over `augment/` (the 15 ops, the search space, PBA's policy, the baselines), `schedule/` (the
learned schedule as a value, its files, its replay and exports), `data/` (datasets and pipelines), `models/`
(hyper-layers, models, hyperize), `engine/` (the trainer, lambda), `run/` (the run folder and its log) and `kernels/`
(fused Triton kernels). The data flow of a search is in `hba_fast/search.py`.

The public names are importable from here, on first use (importing hba_fast stays light):
    from hba_fast import SchedulePolicy, Schedule, read_schedule, hyperize, materialize, build_model,
                         HyperConv2d, HyperLinear, HyperBatchNorm2d, OPS, apply_op, SearchSpace, apply_policy
The module paths before the house-by-concept layout (SPEC sections 6 and 9: `hba_fast.augment.ops`, `hba_fast.policy`,
`hba_fast.hyper`, `hba_fast.baselines`) still import: each is an alias whose names come from their new homes.
"""
import importlib
import importlib.abc
import importlib.util
import sys
import types

__version__ = "0.1.0"

# public name -> the module that defines it
_PUBLIC = {
    "SchedulePolicy": "hba_fast.schedule.policy", "Schedule": "hba_fast.schedule.file",
    "read_schedule": "hba_fast.schedule.file", "hyperize": "hba_fast.models.hyperize",
    "materialize": "hba_fast.models.registry", "build_model": "hba_fast.models.registry",
    "HyperConv2d": "hba_fast.models.layers", "HyperLinear": "hba_fast.models.layers",
    "HyperBatchNorm2d": "hba_fast.models.layers", "OPS": "hba_fast.augment.ops", "apply_op": "hba_fast.augment.ops",
    "SearchSpace": "hba_fast.augment.space", "LAM_DIM": "hba_fast.augment.space",
    "apply_policy": "hba_fast.augment.policy", "AUTOAUGMENT": "hba_fast.augment.baselines",
}
__all__ = list(_PUBLIC)

# module paths before the house-by-concept layout -> where their names live now
_MOVED = {
    "hba_fast.ops": ("hba_fast.augment.ops",),
    "hba_fast.policy": ("hba_fast.augment.policy", "hba_fast.augment.space"),
    "hba_fast.hyper": ("hba_fast.models.layers",),
    "hba_fast.baselines": ("hba_fast.augment.baselines",),
}


def __getattr__(name: str):
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'hba_fast' has no attribute {name!r}")


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """`import hba_fast.ops` (an old path) gives an alias module that reads each name from the new homes."""

    def find_spec(self, fullname, path, target=None):
        return importlib.util.spec_from_loader(fullname, self) if fullname in _MOVED else None

    def create_module(self, spec):
        homes = [importlib.import_module(home) for home in _MOVED[spec.name]]
        alias = types.ModuleType(spec.name, f"{spec.name} moved to {', '.join(_MOVED[spec.name])}")

        def __getattr__(attr: str):
            for home in homes:
                if hasattr(home, attr):
                    return getattr(home, attr)
            raise AttributeError(f"module {spec.name!r} (now {', '.join(_MOVED[spec.name])}) has no attribute {attr!r}")

        alias.__getattr__ = __getattr__
        return alias

    def exec_module(self, module):
        pass


if not any(isinstance(finder, _MovedModules) for finder in sys.meta_path):
    sys.meta_path.append(_MovedModules())
