"""Typed, frozen run configuration: YAML in, one dataclass per section, clear errors out.

A config file has the sections `data`, `policy`, `model`, `optim`, `train` and `run`; every field has a
type, a unit and (where it matters) a range, checked on load. Unknown keys are errors that name the nearest
valid key; cross-field rules live in `__post_init__` with the fix in the message. Overrides use one generic
syntax, `--set section.field=value` (the value is parsed as YAML: `--set train.epochs=3`,
`--set data.path=null`). YAML 1.1 reads on/off/yes/no as booleans; a field whose choices hold such a word gets
the word back (`--set train.amp=off` is "off"). An empty config file is an error (see `load_config`). The
resolved config is written into the run folder (`to_dict`).
"""
from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError


def _range(lo=None, hi=None, choices=None, free=False):
    """Field metadata: bounds, the valid choices (a tuple, or a function that reads them from a registry), and
    `free`: a resumed run may change the field (how a run runs or logs, not what it computes; its length)."""
    return {"lo": lo, "hi": hi, "choices": choices, "free_on_resume": free}


def _searched(lo=None, hi=None, choices=None):
    """`_range` of a field only the search reads: `hba-fast train` / `compare` runs do not depend on it (a train run
    resumed with another value of it is the same run)."""
    return {**_range(lo, hi, choices), "search_only": True}


# Choices read from the registries that define them (read when a value is checked, so loading a config does not
# import the models or kernels).
def _datasets():
    from .data.datasets import DATASETS

    return DATASETS


def _recipes():
    from .data.recipes import RECIPES

    return ("auto", *RECIPES)


def _backends():
    from .data.base import BACKENDS

    return BACKENDS


def _models():
    from .models.registry import MODEL_NAMES

    return MODEL_NAMES


def _policy_forms():
    from .augment.policy import POLICY_FORMS

    return POLICY_FORMS


def _spaces():
    from .augment.spaces import SPACES

    return SPACES


def _strategies():
    from .models import STRATEGIES

    return STRATEGIES


def _kernel_impls():
    from .kernels import IMPLS

    return IMPLS


def _graph_modes():
    from .engine.graphs import GRAPHS

    return GRAPHS


def _compile_modes():
    from .engine.graphs import COMPILE

    return COMPILE


@dataclass(frozen=True)
class DataConfig:
    dataset: str = field(default="shapes10", metadata=_range(choices=_datasets))
    path: str | None = None  # dataset root or file; None for the generated shapes10
    max_classes: int | None = field(default=None, metadata=_range(2))  # keep the first N classes (folder datasets)
    image_size: int = field(default=32, metadata=_range(8, 1024))  # px; folder datasets and shapes10
    num_train: int | None = field(default=4000, metadata=_range(1))  # reduced training split (None: all left)
    num_val: int = field(default=10000, metadata=_range(0))  # images held out of train for the hyper steps
    num_test: int | None = field(default=None, metadata=_range(1))  # cap on test images (None: all)
    split_seed: int = 0  # seed of the reduced splits
    recipe: str = field(default="auto", metadata=_range(choices=_recipes))  # auto: by dataset (recipes.py)
    backend: str = field(default="auto", metadata=_range(choices=_backends))  # auto: DALI on CUDA when installed
    batch_size: int = field(default=128, metadata=_range(1))  # images per step and process
    num_threads: int = field(default=4, metadata=_range(1, 256, free=True))  # DALI CPU threads
    on_corrupt: str = field(default="skip", metadata=_range(choices=("skip", "error")))
    device_resident: bool = True  # torch backend: keep uint8 arrays on the GPU when they fit
    cutout: bool = True  # the recipe's fixed-size Cutout (16 px CIFAR, 20 px SVHN); off for the `baseline` run
    policy_form: str = field(default="auto", metadata=_range(choices=_policy_forms, free=True))  # torch
    # backend's policy form (hba_fast.augment.policy): static (no host syncs) | indexed; auto: static on CUDA, else
    # indexed

    def __post_init__(self):
        if self.dataset != "shapes10" and self.path is None:
            raise ConfigError(f"data.dataset={self.dataset!r} needs data.path (the dataset's folder or file); "
                              f"set it with --set data.path=/path/to/data, or use data.dataset=shapes10")


@dataclass(frozen=True)
class PolicyConfig:
    sigma: float = field(default=1.0, metadata=_searched(0.0, 100.0))  # std of eps_i in lambda_i = lambda + eps_i
    init: str = field(default="paper", metadata=_searched(choices=("paper", "weak")))  # lambda's start, for every
    # magnitude: paper = lo + init_magnitude (hi - lo) (appendix A: 0.95 lo + 0.05 hi; the enhance ops' factor
    # 0.19, near their strong end 0.1); weak = init_magnitude of the way from the op's identity towards its range's
    # end (enhance ops 0.955 at 0.05; the same as paper for the other ops)
    init_prob: float = field(default=0.05, metadata=_searched(1e-4, 0.9999))  # every slot's initial probability
    init_magnitude: float = field(default=0.05, metadata=_searched(1e-4, 0.9999))  # fraction of the range (above)
    space: str = field(default="pba", metadata=_range(choices=_spaces))  # what lambda holds (augment/spaces.py):
    # pba = PBA's 54-entry augmentation space; stn-cifar = STN's 15 dropout and augmentation hyperparameters (4.3)
    entropy_weight: float = field(default=1e-3, metadata=_searched(0.0, 10.0))  # train.method=stn only: weight of
    # the perturbation's entropy bonus in the scale's objective (STN's --entropy_weight; its README runs 1e-3)


@dataclass(frozen=True)
class ModelConfig:
    name: str = field(default="wrn-40-2", metadata=_range(choices=_models))  # a name in hba_fast.models.MODELS
    strategy: str = field(default="first_bn", metadata=_searched(choices=_strategies))  # weight sharing (paper 4.1)
    channels_last: bool = True  # memory format on CUDA
    kernels: str = field(default="auto", metadata=_range(choices=_kernel_impls, free=True))  # hyper-layer impl:
    # auto = fused Triton kernels on CUDA tensors, torch elsewhere; torch = cuDNN/ATen everywhere
    checkpoint: str | None = None  # local weights file to start from, any model (None: fresh init); tensors of
    # another shape or name stay fresh and are named in the log (hba_fast/models/external.py)
    # HyperBatchNorm2d init (hba_fast.models.layers.init_hyper_bn; docs/results/hyper-options-cpu.md measures why):
    hyper_bn_bias_u: float = field(default=0.0, metadata=_searched(-10.0, 10.0))  # constant init of bias_u (phiU of
    # beta); 0 (nn.BatchNorm2d's beta) closes lambda's shift path at the start (bias_v gets no gradient), 1 opens
    # it but cost the demo's hypernet 7-8 points of test error
    hyper_bn_v_std: float = field(default=0.01, metadata=_searched(0.0, 10.0))  # std of weight_v, bias_v (phiV) at
    # init, times sqrt(lam_dim) (STN's 0.01: std(phiV lam) = hyper_bn_v_std * rms(lam))


@dataclass(frozen=True)
class OptimConfig:
    lr: float = field(default=0.05, metadata=_range(0.0, 10.0))  # SGD learning rate alpha on phi
    momentum: float = field(default=0.9, metadata=_range(0.0, 1.0))
    nesterov: bool = True
    weight_decay: float = field(default=0.005, metadata=_range(0.0, 1.0))
    schedule: str = field(default="cosine", metadata=_range(choices=("cosine", "step", "constant")))
    milestones: tuple[int, ...] = ()  # epochs where the step schedule multiplies lr by `gamma`
    gamma: float = field(default=0.1, metadata=_range(0.0, 1.0))
    warmup_epochs: float = field(default=0.0, metadata=_range(0.0))  # linear warm-up of lr, in epochs
    hyper_lr: float = field(default=0.03, metadata=_searched(0.0, 10.0))  # Adam learning rate alpha' on lambda

    def __post_init__(self):
        if self.schedule == "step" and not self.milestones:
            raise ConfigError("optim.schedule=step needs optim.milestones (epochs), "
                              "e.g. --set optim.milestones=[90,180]")
        if self.nesterov and self.momentum == 0:
            raise ConfigError("optim.nesterov=true needs optim.momentum > 0; set optim.momentum=0.9 or nesterov=false")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = field(default=200, metadata=_range(1, free=True))
    t_train: int = field(default=2, metadata=_range(1))  # weight steps per round (Algorithm 1)
    t_val: int = field(default=1, metadata=_searched(0))  # hyper steps per round
    steps_per_epoch: int | None = field(default=None, metadata=_range(1))  # cap (None: one pass of the train split)
    amp: str = field(default="auto", metadata=_range(choices=("auto", "bf16", "off")))  # auto: bf16 on CUDA only
    device: str = field(default="auto", metadata=_range(choices=("auto", "cpu", "cuda")))
    allow_cpu_fallback: bool = True  # with device=cuda and no GPU: run on the CPU (true) or stop (false)
    seed: int = 0
    log_every: int = field(default=20, metadata=_range(1, free=True))  # weight steps between metric lines (whole
    # rounds)
    eval_every: int = field(default=1, metadata=_range(0, free=True))  # epochs between full validation passes (0:
    # never)
    checkpoint_every: int = field(default=1, metadata=_range(1))  # epochs between checkpoints
    graphs: str = field(default="auto", metadata=_range(choices=_graph_modes, free=True))  # CUDA graph of the
    # round: auto = on with CUDA; on without CUDA runs the same capture-ready round eagerly (hba_fast/engine/graphs.py)
    compile: str = field(default="off", metadata=_range(choices=_compile_modes, free=True))  # torch.compile of the
    # model's forward/backward: off | default | max-autotune (without inductor's own CUDA graphs); with or without
    # graphs
    hyper_bn: str = field(default="running", metadata=_searched(choices=("batch", "running")))  # BN in the hyper
    # step: eval mode (running statistics, as STN / Delta-STN), or batch statistics with the running ones left alone
    hyper_warmup_epochs: int = field(default=1, metadata=_searched(0))  # epochs of weight steps before the first
    # hyper step (STN trains 5 epochs first); lambda stays at its initial value until then
    method: str = field(default="hba", metadata=_searched(choices=("hba", "stn")))  # hba: the paper's (fixed
    # perturbation policy.sigma, one shared lambda in the hyper step); stn: STN's own (a learned perturbation scale
    # per entry with policy.entropy_weight, perturbed lambda in the hyper step; needs model.strategy=all, STN's
    # hypernetwork)
    hyper_dropout: str = field(default="off", metadata=_searched(choices=("off", "concrete")))  # a regularisation
    # space's dropout in the hyper step: off (STN's code: eval mode, rates reach the loss through the hypernetwork
    # only) or concrete (relaxed Bernoulli masks at lambda's rates: a direct gradient; models/dropout.py)


@dataclass(frozen=True)
class RunConfig:
    out_dir: str = "runs/demo"  # the run folder: config, metrics, checkpoints, schedule, plot, model
    resume: bool = True  # continue from out_dir/checkpoint.pt when it exists
    progress: bool = True  # progress bar with images per second
    tensorboard: bool = False  # also write TensorBoard events into out_dir/tensorboard (needs `tensorboard`)
    num_threads: int | None = field(default=None, metadata=_range(1, 1024))  # torch CPU threads (None: the cores
    # this process may use, or OMP_NUM_THREADS; logged at start)


@dataclass(frozen=True)
class Config:
    data: DataConfig = DataConfig()
    policy: PolicyConfig = PolicyConfig()
    model: ModelConfig = ModelConfig()
    optim: OptimConfig = OptimConfig()
    train: TrainConfig = TrainConfig()
    run: RunConfig = RunConfig()

    def to_dict(self) -> dict:
        return _to_plain(dataclasses.asdict(self))

    def free_on_resume(self, kind: str) -> set[tuple[str, str]]:
        """The fields a resumed run of `kind` ("search" or "train") may change besides run.*: those marked free, and
        for a train run also those only the search reads."""
        return free_on_resume_fields() | (search_only_fields() if kind == "train" else set())


def _fields_where(key: str) -> set[tuple[str, str]]:
    return {(section.name, f.name) for section in dataclasses.fields(Config)
            for f in dataclasses.fields(section.default) if f.metadata.get(key)}


def search_only_fields() -> set[tuple[str, str]]:
    """(section, key) of every field that only the search reads: a `train` run is the same run whatever they hold."""
    return _fields_where("search_only")


def free_on_resume_fields() -> set[tuple[str, str]]:
    """(section, key) of every field a resumed run may change (besides run.*): its length, and switches of how a
    step is computed or logged, not of what it computes (graphs, compile and kernels give the same steps up to float
    rounding; policy_form the same draws)."""
    return _fields_where("free_on_resume")


def _to_plain(x):
    if isinstance(x, dict):
        return {k: _to_plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_to_plain(v) for v in x]
    return x


# Words users write for a valid choice that spelling alone would not find (gpu is closer to 'cpu' than 'cuda').
_SYNONYMS = {"gpu": "cuda", "nvidia": "cuda", "cuda:0": "cuda", "bfloat16": "bf16", "fp32": "off", "float32": "off",
             "none": "off"}
# YAML 1.1 reads these words as booleans; a string choice gets the word back (--set train.amp=off).
_BOOL_WORDS = {True: ("on", "yes", "true", "y"), False: ("off", "no", "false", "n")}


def _nearest(name: str, valid) -> str:
    valid = [str(v) for v in valid]
    synonym = _SYNONYMS.get(name.lower())
    if synonym in valid:
        return f" (did you mean {synonym!r}?)"
    match = difflib.get_close_matches(name, valid, n=1, cutoff=0.4)
    return f" (did you mean {match[0]!r}?)" if match else f" (valid: {', '.join(valid)})"


def _choices(f: dataclasses.Field):
    meta = f.metadata
    return meta["choices"]() if callable(meta.get("choices")) else meta.get("choices")


def _check_value(where: str, f: dataclasses.Field, value: Any) -> Any:
    """Coerce `value` to the field's annotated type and check its range; raise ConfigError with the fix."""
    hint = typing.get_type_hints(_OWNER[where.split(".")[0]])[f.name]
    args = typing.get_args(hint)
    optional = isinstance(hint, types.UnionType) and type(None) in args
    base = next((a for a in args if a is not type(None)), hint) if optional else hint
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{where} may not be null; give a {getattr(base, '__name__', base)}")
    origin = typing.get_origin(base)
    if origin is tuple:
        ints = isinstance(value, (list, tuple)) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        if not ints:
            raise ConfigError(f"{where} must be a list of integers, got {value!r}")
        return tuple(value)
    if base is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
    elif base is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
    elif base is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        value = float(value)
    elif base is str:
        choices = _choices(f)
        if isinstance(value, bool) and choices:  # YAML read on/off/yes/no as a boolean: give the word back
            word = next((w for w in _BOOL_WORDS[value] if w in choices), None)
            if word is None:
                raise ConfigError(f"{where} got {value!r} (YAML reads on/off/yes/no/true/false as booleans), which is "
                                  f"none of its choices: {', '.join(map(str, choices))}")
            value = word
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {value!r}")
    meta = f.metadata
    choices = _choices(f)
    if choices and value not in choices:
        raise ConfigError(f"{where}={value!r} is not valid{_nearest(str(value), choices)}")
    if meta.get("lo") is not None and value < meta["lo"]:
        raise ConfigError(f"{where}={value!r} is below its minimum {meta['lo']}")
    if meta.get("hi") is not None and value > meta["hi"]:
        raise ConfigError(f"{where}={value!r} is above its maximum {meta['hi']}")
    return value


_OWNER = typing.get_type_hints(Config)  # section name -> its dataclass


def from_dict(raw: dict | None) -> Config:
    """Build a Config from nested dicts (YAML), checking every key, type and range."""
    raw = raw or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"a config must be a mapping of sections, got {type(raw).__name__}")
    if "space" in raw:  # SPEC 9 spells the search space `space: pba | stn-cifar` at the top: policy.space
        raw = dict(raw)
        space, policy = raw.pop("space"), dict(raw.get("policy") or {})
        if policy.setdefault("space", space) != space:
            raise ConfigError(f"space: {space!r} and policy.space: {policy['space']!r} disagree; give one of them")
        raw["policy"] = policy
    sections = {}
    for name, section_raw in raw.items():
        if name not in _OWNER:
            raise ConfigError(f"unknown config section {name!r}{_nearest(name, _OWNER)}")
        if section_raw is None:
            section_raw = {}
        if not isinstance(section_raw, dict):
            raise ConfigError(f"config section {name!r} must be a mapping of fields, got {section_raw!r}")
        cls = _OWNER[name]
        fields = {f.name: f for f in dataclasses.fields(cls)}
        values = {}
        for key, value in section_raw.items():
            if key not in fields:
                raise ConfigError(f"unknown config key {name}.{key}{_nearest(key, fields)}")
            values[key] = _check_value(f"{name}.{key}", fields[key], value)
        sections[name] = cls(**values)
    return Config(**sections)


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply `section.field=value` overrides (value parsed as YAML) to a raw config dict."""
    raw = raw or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"a config must be a mapping of sections, got {type(raw).__name__}")
    raw = {k: {} if v is None else dict(v) if isinstance(v, dict) else v for k, v in raw.items()}  # from_dict checks
    for item in overrides:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise ConfigError(f"--set expects section.field=value, got {item!r} (e.g. --set train.epochs=3)")
        key, text = item.split("=", 1)
        section, name = key.split(".", 1)
        try:
            value = yaml.safe_load(text) if text != "" else None
        except yaml.YAMLError as e:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML ({' '.join(str(e).split())})") from None
        if not isinstance(raw.setdefault(section, {}), dict):
            raise ConfigError(f"config section {section!r} must be a mapping of fields, got {raw[section]!r}")
        raw[section][name] = value
    return raw


def load_config(path: str | Path | None, overrides: list[str] = ()) -> Config:
    """Read a YAML config (None: the built-in demo) and apply `--set` overrides.

    An empty file (or one of comments only) is an error rather than "all defaults": the defaults are a 200-epoch
    WRN-40-2 search, never what someone who saved an empty or truncated file meant, and the demo is one command
    away (`hba-fast search` with no config)."""
    if path is None:
        path = DEMO_CONFIG
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path} is a folder; give a YAML config file such as configs/demo.yaml")
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} not found; give a YAML file such as configs/demo.yaml")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {' '.join(str(e).split())}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read config file {path} ({type(e).__name__}: {e}); give a readable YAML text "
                          f"file such as configs/demo.yaml") from None
    if raw is None or raw == {}:
        raise ConfigError(f"config file {path} is empty; copy configs/demo.yaml (or another file in configs/) and "
                          f"edit it, or run `hba-fast search` without a config for the demo")
    return from_dict(apply_overrides(raw, list(overrides)))


DEMO_CONFIG = Path(__file__).resolve().parent / "configs" / "demo.yaml"
