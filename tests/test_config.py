"""Config loading: typed sections, one-line errors naming the file and key, overrides, run-dir checks."""

import dataclasses

import pytest
import yaml

from sae_ooc.cli import main
from sae_ooc.config import Config, ConfigError, load_config
from sae_ooc.rundir import RunDir


def _write(tmp_path, text, name="exp.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_defaults_and_overrides(tmp_path):
    p = _write(tmp_path, "task:\n  n_entities: 20\ntrain:\n  lr: 1e-3\n")
    cfg = load_config(p, ["train.steps=7", "model.d_model=32", "model.n_heads=2", "train.lr=3e-4"])
    assert cfg.name == "exp"
    assert cfg.task.n_entities == 20 and cfg.train.steps == 7 and cfg.model.d_model == 32
    assert cfg.train.lr == pytest.approx(3e-4) and isinstance(cfg.train.lr, float)
    assert cfg.task.n_relations == Config().task.n_relations  # untouched keys keep their defaults


@pytest.mark.parametrize(
    "text, key",
    [
        ("task:\n  n_entites: 20\n", "task.n_entites"),
        ("train:\n  steps: many\n", "train.steps"),
        ("task:\n  n_relations: 3\n  facts_per_entity: 5\n", "task.facts_per_entity"),
        ("bogus:\n  x: 1\n", "bogus"),
        ("model:\n  d_model: 30\n  n_heads: 4\n", "model.n_heads"),
        ("model: 3\n", "model"),
    ],
)
def test_bad_configs_name_file_and_key(tmp_path, text, key):
    p = _write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert str(p) in msg and key in msg and "\n" not in msg


def test_malformed_yaml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="malformed YAML at line"):
        load_config(_write(tmp_path, "task:\n  n_entities: [1\n"))
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_every_shipped_config_loads():
    from pathlib import Path

    for p in sorted(Path("configs").glob("*.yaml")):
        assert load_config(p).name == p.stem


def test_default_yaml_equals_builtin_defaults():
    from pathlib import Path

    d = dataclasses.asdict(load_config(Path("configs/default.yaml")))
    assert {k: v for k, v in d.items() if k != "name"} == {k: v for k, v in dataclasses.asdict(Config()).items() if k != "name"}


def test_cli_bad_input_exit_2_one_line(tmp_path, capsys):
    p = _write(tmp_path, "task:\n  n_entites: 20\n")
    assert main(["data", "--config", str(p), "--run", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "n_entites" in err and "Traceback" not in err
    assert main(["data", "--set", "train.lr", "--run", str(tmp_path / "r")]) == 2


def test_run_dir_refuses_a_different_task_config(tmp_path, capsys):
    run = tmp_path / "run"
    tiny = "configs/tiny.yaml"
    assert main(["data", "--config", tiny, "--run", str(run)]) == 0
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["task"]["n_entities"] == load_config(tiny).task.n_entities
    capsys.readouterr()
    assert main(["data", "--config", tiny, "--run", str(run), "--set", "task.n_entities=13"]) == 2
    err = capsys.readouterr().err
    assert "different task config" in err and "task.n_entities: 12 -> 13" in err
    # --force rebuilds with the new task
    assert main(["data", "--config", tiny, "--run", str(run), "--set", "task.n_entities=13", "--force"]) == 0


def test_unchanged_stage_is_skipped_and_changed_one_recomputed(tmp_path, capsys):
    run = tmp_path / "run"
    args = ["data", "--config", "configs/tiny.yaml", "--run", str(run)]
    assert main(args) == 0
    stamp = (run / "data" / "vocab.json").stat().st_mtime_ns
    capsys.readouterr()
    assert main(args) == 0
    assert "skipped" in capsys.readouterr().out
    assert (run / "data" / "vocab.json").stat().st_mtime_ns == stamp
    from sae_ooc.pipeline import fingerprint
    from sae_ooc.stages import get_stage

    rd = RunDir(run, load_config("configs/tiny.yaml"))
    before = rd.stage_record("data")["fingerprint"]
    assert fingerprint(rd, get_stage("data"), {}) == before
    cfg2 = load_config("configs/tiny.yaml", ["task.phi=1.5"])
    assert fingerprint(RunDir(run, cfg2), get_stage("data"), {}) != before


def test_libyaml_reads_and_writes_every_config_as_pyyaml_does():
    """`load_yaml` / `dump_yaml` (libyaml where PyYAML has it) against PyYAML's pure-Python safe loader and dumper: the same
    data from every config file, the same text for every resolved config (RUN/config.yaml is compared as text before it
    is rewritten, so a different dumper would rewrite every run's config once)."""
    from pathlib import Path

    from sae_ooc.config import config_to_yaml
    from sae_ooc.typed_yaml import dump_yaml, load_yaml

    files = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))
    assert len(files) >= 10
    for f in files:
        text = f.read_text()
        assert load_yaml(text) == yaml.load(text, Loader=yaml.SafeLoader), f
        d = load_config(f).to_dict()
        assert config_to_yaml(load_config(f)) == dump_yaml(d, sort_keys=False) == yaml.dump(d, Dumper=yaml.SafeDumper, sort_keys=False), f
    assert load_yaml("a: [1, {b: null}]\nc: 2.5e-3\n") == {"a": [1, {"b": None}], "c": 2.5e-3}
