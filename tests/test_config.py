"""Config loading: every shipped config loads, and bad input gives a clear error naming the fix."""
from pathlib import Path

import pytest

from hba_fast.config import Config, apply_overrides, from_dict, load_config
from hba_fast.errors import ConfigError

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_load(path):
    cfg = load_config(path, ["data.path=/some/where"] if "demo" not in path.name else [])
    assert isinstance(cfg, Config)
    assert cfg.train.t_train >= 1


def test_paper_table8_values():
    red = load_config(Path(CONFIGS[0]).parent / "cifar10-reduced.yaml", ["data.path=x"])
    assert (red.data.num_train, red.data.num_val, red.optim.lr, red.optim.weight_decay, red.optim.hyper_lr,
            red.train.epochs, red.model.name) == (4000, 10000, 0.05, 0.005, 0.03, 200, "wrn-40-2")
    imnet = load_config(Path(CONFIGS[0]).parent / "imagenet.yaml", ["data.path=x"])
    assert imnet.optim.schedule == "step" and imnet.optim.milestones == (90, 180, 240)
    assert imnet.data.max_classes == 120 and imnet.optim.hyper_lr == 0.007


def test_demo_is_the_default():
    cfg = load_config(None)
    assert cfg.data.dataset == "shapes10"


def test_unknown_key_names_nearest():
    with pytest.raises(ConfigError, match=r"unknown config key train\.epoch .*'epochs'"):
        from_dict({"train": {"epoch": 3}})
    with pytest.raises(ConfigError, match=r"unknown config section 'optimizer'.*'optim'"):
        from_dict({"optimizer": {}})


@pytest.mark.parametrize("raw, match", [
    ({"train": {"epochs": "ten"}}, r"train\.epochs must be an integer"),
    ({"train": {"epochs": 0}}, r"train\.epochs=0 is below its minimum 1"),
    ({"optim": {"lr": -1}}, r"optim\.lr=-1.0 is below"),
    ({"policy": {"sigma": True}}, r"policy\.sigma must be a number"),
    ({"model": {"strategy": "first-bn"}}, r"model\.strategy='first-bn' is not valid.*'first_bn'"),
    ({"data": {"dataset": "cifar10"}}, r"needs data\.path"),
    ({"optim": {"schedule": "step"}}, r"needs optim\.milestones"),
    ({"data": {"backend": "gpu"}}, r"data\.backend='gpu' is not valid"),
])
def test_bad_values(raw, match):
    with pytest.raises(ConfigError, match=match):
        from_dict(raw)


def test_overrides_parse_yaml():
    raw = apply_overrides({"train": {"epochs": 5}}, ["train.epochs=3", "optim.milestones=[1, 2]", "data.path=null"])
    assert raw["train"]["epochs"] == 3 and raw["optim"]["milestones"] == [1, 2] and raw["data"]["path"] is None
    with pytest.raises(ConfigError, match="section.field=value"):
        apply_overrides({}, ["epochs=3"])


def test_malformed_files_are_config_errors(tmp_path):
    for text, match in (("- a\n", "must be a mapping of sections"), ("data: 5\n", "section 'data' must be a mapping")):
        path = tmp_path / "bad.yaml"
        path.write_text(text)
        with pytest.raises(ConfigError, match=match):
            load_config(path)
        with pytest.raises(ConfigError, match=match):
            load_config(path, ["data.path=x"])


def test_missing_file():
    with pytest.raises(ConfigError, match="not found"):
        load_config("no/such.yaml")


def test_round_trip_through_dict():
    cfg = load_config(None, ["train.epochs=2"])
    assert from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("text", ["", "\n", "# nothing but a comment\n", "{}\n"])
def test_empty_config_file_is_an_error_not_the_defaults(tmp_path, text):
    """An empty file would otherwise start the dataclass defaults: a 200-epoch WRN-40-2 search."""
    path = tmp_path / "empty.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"is empty; copy configs/demo\.yaml .* without a config for the demo"):
        load_config(path)


@pytest.mark.parametrize("word, expected", [("off", "off"), ("no", "off"), ("false", "off"), ("Off", "off"),
                                            ("'off'", "off"), ("auto", "auto"), ("bf16", "bf16")])
def test_yaml_booleans_give_string_choices_their_word_back(tmp_path, word, expected):
    assert load_config(None, [f"train.amp={word}"]).train.amp == expected
    path = tmp_path / "c.yaml"
    path.write_text(f"train:\n  amp: {word}\n")
    assert load_config(path).train.amp == expected


def test_a_boolean_that_is_no_choice_says_why():
    with pytest.raises(ConfigError, match=r"train\.amp got True \(YAML reads on/off/yes/no/true/false as booleans\)"):
        from_dict({"train": {"amp": True}})
    with pytest.raises(ConfigError, match=r"must be a string, got 3"):
        from_dict({"train": {"amp": 3}})


@pytest.mark.parametrize("value, suggestion", [("gpu", "cuda"), ("GPU", "cuda"), ("cuda:0", "cuda"), ("cpus", "cpu")])
def test_device_suggestions(value, suggestion):
    with pytest.raises(ConfigError, match=rf"train\.device={value!r} is not valid \(did you mean '{suggestion}'\?\)"):
        from_dict({"train": {"device": value}})


def test_num_threads_field():
    assert load_config(None).run.num_threads is None
    assert load_config(None, ["run.num_threads=3"]).run.num_threads == 3
    with pytest.raises(ConfigError, match="below its minimum 1"):
        load_config(None, ["run.num_threads=0"])


def test_the_boolean_words_map_back_for_any_string_choice(monkeypatch):
    """Generic in `_check_value`: e.g. a field with choices auto|on|off (train.graphs) gets 'on' and 'off' back."""
    import dataclasses

    from hba_fast import config as config_module

    @dataclasses.dataclass(frozen=True)
    class Fake:
        graphs: str = dataclasses.field(default="auto", metadata=config_module._range(choices=("auto", "on", "off")))

    monkeypatch.setitem(config_module._OWNER, "fake", Fake)
    field = dataclasses.fields(Fake)[0]
    assert [config_module._check_value("fake.graphs", field, v) for v in (True, False, "auto")] == ["on", "off", "auto"]


def test_a_resume_may_change_how_it_runs_but_not_what(tmp_path):
    """check_run_folder: switches of how a step is computed or logged (marked free on resume in config.py), run.*
    and train.epochs may
    change on resume; a setting that changes the results is refused, naming it; a `train` run ignores search-only
    fields."""
    import yaml

    from hba_fast.errors import RunFolderError
    from hba_fast.run.folder import check_run_folder

    cfg = load_config(None)
    saved = cfg.to_dict()
    search, train = cfg.free_on_resume("search"), cfg.free_on_resume("train")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(saved, sort_keys=False))
    assert check_run_folder(tmp_path, saved, resume=True, free=search) is None  # no checkpoint: a fresh start
    (tmp_path / "checkpoint.pt").write_bytes(b"")
    now = load_config(None, ["train.graphs=off", "data.policy_form=static", "train.log_every=7",
                             "train.epochs=9", "run.progress=false"]).to_dict()
    changed = check_run_folder(tmp_path, now, resume=True, free=search)
    assert any(c.startswith("train.graphs: ") for c in changed) and len(changed) == 5, changed
    with pytest.raises(RunFolderError, match=r"other settings \(optim.lr: 0.05 -> 0.1\)"):
        check_run_folder(tmp_path, load_config(None, ["optim.lr=0.1"]).to_dict(), resume=True, free=search)
    with pytest.raises(RunFolderError, match="run.resume=false"):
        check_run_folder(tmp_path, saved, resume=False, free=search)
    train_saved = {**saved, "evaluate": {"augment": "baseline"}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(train_saved, sort_keys=False))
    train_now = {**load_config(None, ["optim.hyper_lr=0.5"]).to_dict(), "evaluate": {"augment": "baseline"}}
    assert check_run_folder(tmp_path, train_now, resume=True, free=train) == ["optim.hyper_lr: 0.05 -> 0.5"]
