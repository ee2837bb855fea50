"""Issue 19, parts 2 and 3: tracebacks that must be one-line errors, and silent mistakes.

A read-only run (a no-op command writes nothing; one that must write says so in one line), --config on a folder,
two commands on one run (RUN/.lock), an empty config, k > d_sae, one rule for per-hook SAE widths, stages that read
config keys they do not declare, `analyze dla --force` then `pipeline`, and what Ctrl-C promises.
"""

from __future__ import annotations

import errno
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from circuit_fixtures import make_run, mark_stages
from test_bad_input import one_line_error

from sae_ooc import io as sae_io
from sae_ooc.cli import main as cli_main
from sae_ooc.config import config_to_yaml, load_config
from sae_ooc.errors import UserError
from sae_ooc.pipeline import run_stage
from sae_ooc.rundir import RunDir
from sae_ooc.saes.architectures import resolved_d_sae, resolved_k, training_sae_config
from sae_ooc.typed_yaml import ConfigError

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.yaml"
EMBED = "blocks.0.hook_resid_pre"


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("cli_safety"))


@pytest.fixture
def run(base, tmp_path):
    shutil.copytree(base.root, tmp_path / "run")  # copy2: mtimes kept, so the recorded outputs stay intact
    return RunDir(tmp_path / "run", base.cfg)


# read-only runs -------------------------------------------------------------------------------------------------
def test_an_up_to_date_command_writes_nothing(run, capsys):
    saved, stages = run.root / "config.yaml", run.stages_file
    before = [(p.stat().st_ino, p.stat().st_mtime_ns) for p in (saved, stages)]
    assert cli_main(["data", "--run", str(run.root)]) == 0
    assert "unchanged, skipped" in capsys.readouterr().out
    assert [(p.stat().st_ino, p.stat().st_mtime_ns) for p in (saved, stages)] == before  # not rewritten, not replaced


def test_a_read_only_run_answers_a_no_op_and_refuses_a_write_in_one_line(run, capsys, monkeypatch):
    def read_only(path, write):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(sae_io, "_atomic", read_only)
    assert cli_main(["data", "--run", str(run.root)]) == 0  # nothing to write: it must not try
    capsys.readouterr()
    one_line_error(capsys, ["data", "--run", str(run.root), "--force"], "Read-only file system", "--run COPY")


def test_a_folder_as_config(tmp_path, capsys):
    one_line_error(capsys, ["data", "--config", str(ROOT / "configs"), "--run", str(tmp_path / "r")], "is a folder", ".yaml")


# two commands on one run -------------------------------------------------------------------------------------------
def test_a_second_writer_is_told_which_command_holds_the_run(run, capsys):
    holder = ("import sys\nfrom sae_ooc.runlock import run_lock\n"
              "with run_lock(sys.argv[1], command='sae-ooc train --run R'):\n"
              "    print('held', flush=True)\n    sys.stdin.read()\n")
    p = subprocess.Popen([sys.executable, "-c", holder, str(run.root)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert p.stdout.readline().strip() == "held"
        err = one_line_error(capsys, ["data", "--run", str(run.root), "--force"], "is in use by `sae-ooc train --run R (pid ")
        assert f"(pid {p.pid})" in err
        one_line_error(capsys, ["query", "--run", str(run.root), "e3 r1 r2"], "is in use")  # a reader waits for no writer either
        assert run.stage_record("data") is not None  # the refused --force forgot nothing
    finally:
        p.stdin.close()
        p.wait()
    assert cli_main(["data", "--run", str(run.root), "--force"]) == 0  # released when the holder ended


# silent mistakes -------------------------------------------------------------------------------------------------
def test_an_empty_config_is_refused(tmp_path, capsys):
    for text in ("", "# nothing yet\n", "{}\n"):
        (tmp_path / "empty.yaml").write_text(text)
        with pytest.raises(ConfigError, match="is empty"):
            load_config(tmp_path / "empty.yaml")
    one_line_error(capsys, ["data", "--config", str(tmp_path / "empty.yaml"), "--run", str(tmp_path / "r")], "is empty", "configs/default.yaml")
    assert not (tmp_path / "r").exists()


def test_k_above_d_sae_is_refused():
    with pytest.raises(ConfigError, match="sae.k"):
        load_config(TINY, ["sae.d_sae=128", "sae.k=1000"])
    with pytest.raises(ConfigError, match="sae.k_by_hook"):
        load_config(TINY, ["sae.d_sae_by_hook={blocks.0.hook_resid_pre: 8}", "sae.k_by_hook={blocks.0.hook_resid_pre: 9}"])
    p = load_config(TINY, ["sae.k=1000"]).sae  # d_sae from expansion_factor: known once d_in is
    with pytest.raises(UserError, match="more than d_sae 128"):
        training_sae_config(p, 32, "blocks.1.hook_resid_pre", None)
    assert load_config(TINY, ["sae.architecture=standard", "sae.d_sae=128", "sae.k=1000"]).sae.k == 1000  # k unused there


def test_one_rule_for_per_hook_widths_in_every_entry_point(tmp_path):
    import train_sae as script

    defaults = load_config(None).sae
    assert resolved_d_sae(defaults, 64, EMBED) == 128 and resolved_k(defaults, EMBED) == 3  # the built-in per-hook values
    by_set = load_config(None, ["sae.d_sae=512", "sae.k=7"]).sae
    argv = ["--activations", "A", "--hook", EMBED, "--out", "O"]
    by_script = script.sae_params(script.build_parser().parse_args(argv + ["--d-sae", "512", "--k", "7"]))
    (tmp_path / "f.yaml").write_text("sae:\n  d_sae: 512\n  k: 7\n")
    by_file = load_config(tmp_path / "f.yaml").sae
    for p in (by_set, by_script, by_file):
        assert resolved_d_sae(p, 64, EMBED) == 512 and resolved_k(p, EMBED) == 7
    # a layer that writes both keeps its per-hook values; a lower layer's per-hook values give way to a higher global one
    both = load_config(None, ["sae.d_sae=512", "sae.d_sae_by_hook={blocks.0.hook_resid_pre: 64}"]).sae
    assert resolved_d_sae(both, 64, EMBED) == 64 and resolved_d_sae(both, 64, "blocks.1.hook_resid_pre") == 512
    (tmp_path / "g.yaml").write_text("sae:\n  d_sae_by_hook: {blocks.0.hook_resid_pre: 64}\n")
    assert resolved_d_sae(load_config(tmp_path / "g.yaml", ["sae.d_sae=256"]).sae, 64, EMBED) == 256
    # a run's saved config.yaml (every key written) then --set: the same answer as --set on the defaults
    (tmp_path / "saved.yaml").write_text(config_to_yaml(load_config(None)))
    assert resolved_d_sae(load_config(tmp_path / "saved.yaml", ["sae.d_sae=512"]).sae, 64, EMBED) == 512


def test_a_stage_sees_only_its_declared_keys(tiny_cfg):
    from sae_ooc.config_view import ConfigView, UndeclaredConfigKey

    view = ConfigView(tiny_cfg, ("task", "circuit.seed"), "example")
    assert view.task is tiny_cfg.task and view.circuit.seed == tiny_cfg.circuit.seed and view.name == "tiny"
    for read in (lambda: view.model, lambda: view.circuit.top_n, lambda: view.section("model"), lambda: getattr(view, "sae_eval", None)):
        with pytest.raises(UndeclaredConfigKey, match="sae_ooc/stages.py"):
            read()


def test_run_stage_hands_the_stage_the_strict_view(run, monkeypatch):
    import sae_ooc.tasks.data as data_mod
    from sae_ooc.config_view import UndeclaredConfigKey

    seen = {}

    def reads_undeclared(r, force=False):
        seen["task"] = r.cfg.task.n_entities
        return r.cfg.sae_eval.positions  # not among data's keys

    monkeypatch.setattr(data_mod, "run_data", reads_undeclared)
    with pytest.raises(UndeclaredConfigKey, match="'data' read config key 'sae_eval'"):
        run_stage(run, "data", force=True)
    assert seen["task"] == run.cfg.task.n_entities


def test_analyze_subset_then_pipeline_reruns_only_what_is_stale(run, monkeypatch):
    """`analyze dla --force` then `pipeline`: nothing reruns (it reran all seven); after a config change, `analyze dla`
    then `pipeline` computes the six others only."""
    import sae_ooc.analyses.analyze as analyze_mod
    from sae_ooc.config import ANALYSIS_NAMES

    calls = []

    def fake(r, force=False, names="all"):
        chosen = list(ANALYSIS_NAMES) if names == "all" else names.split(",")
        r.analyze_dir.mkdir(parents=True, exist_ok=True)
        for n in chosen:
            (r.analyze_dir / f"{n}.json").write_text(f'{{"n_prompts": {r.cfg.analyze.n_prompts}}}')
        calls.append(chosen)
        return {"analyses": chosen}

    monkeypatch.setattr(analyze_mod, "run_analyze", fake)
    (run.activations_dir).mkdir(exist_ok=True)
    (run.activations_dir / "manifest.json").write_text("{}")
    mark_stages(run, ("harvest",))
    assert run_stage(run, "analyze").ran and calls[-1] == list(ANALYSIS_NAMES)
    assert run_stage(run, "analyze", force=True, names="dla").ran and calls[-1] == ["dla"]
    assert not run_stage(run, "analyze", names="all").ran  # what `pipeline` asks
    changed = RunDir(run.root, load_config(TINY, ["attribution.only_correct=false", "attribution.n_pairs=12", "analyze.n_prompts=5"]))
    assert run_stage(changed, "analyze", names="dla").ran and calls[-1] == ["dla"]
    assert run_stage(changed, "analyze").ran and calls[-1] == [n for n in ANALYSIS_NAMES if n != "dla"]
    assert not run_stage(changed, "analyze").ran and len(calls) == 4
    (run.analyze_dir / "probes.json").unlink()  # a deleted output: every requested part again
    assert run_stage(changed, "analyze", names="dla").ran and calls[-1] == ["dla"]
    assert run_stage(changed, "analyze").ran and "probes" in calls[-1]


@pytest.mark.parametrize("argv, resume", [(["query", "e3 r1 r2"], False), (["pipeline", "--force"], False), (["pipeline"], True),
                                          (["train"], True), (["train", "--force"], False), (["attribute"], False)])
def test_ctrl_c_promises_a_resume_only_where_there_is_one(run, capsys, monkeypatch, argv, resume):
    import sae_ooc.cli as cli

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "resolve_run", interrupted)
    assert cli_main([argv[0], "--run", str(run.root), *argv[1:]]) == 130
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"sae-ooc {argv[0]}: interrupted")
    assert ("resume" in err or "continue" in err) == resume, err
