"""Bad input ends in one line on stderr, exit code 2, no traceback and nothing half-written (GitHub issue #10,
"Crashes"): bad devices and run paths, damaged model / SAE / vocabulary files met by `query` and `pipeline`, a
corrupt stages.json, out-of-range or misplaced query arguments, ignored --set overrides, a reader that leaves
the pipe early, and a stage whose upstream outputs were deleted."""

import json
import shutil
import subprocess
import sys

import pytest
import torch
from circuit_fixtures import HOOKS, make_run, mark_stages

from sae_ooc.cli import main as cli_main
from sae_ooc.io import write_json
from sae_ooc.pipeline import fingerprint
from sae_ooc.rundir import RunDir
from sae_ooc.stages import get_stage


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("bad_input"))


@pytest.fixture
def run(base, tmp_path):
    """A fresh copy of the run for tests that damage it (copytree keeps mtimes, so its outputs stay intact)."""
    shutil.copytree(base.root, tmp_path / "run")
    return RunDir(tmp_path / "run", base.cfg)


def one_line_error(capsys, argv, *needles) -> str:
    assert cli_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for n in needles:
        assert n in err, err
    return err


def argparse_error(capsys, argv, *needles) -> str:
    with pytest.raises(SystemExit) as e:
        cli_main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and all(n in err for n in needles), err
    return err


def test_devices_are_checked_up_front(base, capsys):
    one_line_error(capsys, ["query", "--run", str(base.root), "e3 r1 r2", "--device", "gpu0"], "'gpu0' is not a torch device")
    if not torch.cuda.is_available():
        one_line_error(capsys, ["query", "--run", str(base.root), "e3 r1 r2", "--device", "cuda"], "no CUDA", "--device cpu")
        one_line_error(capsys, ["pipeline", "--run", str(base.root), "--device", "cuda:0"], "no CUDA")


def test_run_pointing_at_a_file(tmp_path, capsys):
    f = tmp_path / "notadir"
    f.write_text("x")
    for cmd in (["query", "e1 r0"], ["pipeline"], ["data"], ["steer"], ["edit"]):
        one_line_error(capsys, [cmd[0], "--run", str(f), *cmd[1:]], "is a file, not a directory")
        # a file above the run directory: mkdir would fail inside the first stage that writes
        one_line_error(capsys, [cmd[0], "--run", str(f / "sub"), *cmd[1:]], f"{f} is a file, not a directory")
    assert f.read_text() == "x"


DAMAGE = [  # (file, how, the command that rebuilds it)
    ("model/model.safetensors", "truncate", "sae-ooc train"),
    (f"saes/{HOOKS[1]}/sae_weights.safetensors", "truncate", "sae-ooc train-sae"),
    ("data/vocab.json", "garbage", "sae-ooc data"),
]


def _damage(path, how):
    if how == "truncate":
        path.write_bytes(path.read_bytes()[:100])
    else:
        path.write_text('{"names": ["e0", ')


@pytest.mark.parametrize("rel, how, rebuild", DAMAGE)
def test_damaged_files_met_by_query_and_pipeline(run, capsys, rel, how, rebuild):
    _damage(run.root / rel, how)
    stages_before = run.stages_file.read_bytes()
    # query loads the file: names it, says it is damaged and how to rebuild it; caches nothing
    one_line_error(capsys, ["query", "--run", str(run.root), "e3 r1 r2"], str(run.root / rel), "corrupt or truncated", rebuild)
    assert not (run.root / "query_cache").exists()
    # the pipeline sees the stage's recorded output changed before loading it: names the file and the command
    one_line_error(capsys, ["pipeline", "--run", str(run.root), "--stages", "attribute"], rel, "changed", f"rerun `{rebuild} --run {run.root}`")
    assert run.stages_file.read_bytes() == stages_before and not run.attribution_dir.exists()


def test_the_pipeline_rebuilds_a_damaged_output_and_names_it(run, capsys):
    """Run as a whole, the pipeline recomputes the stage whose file was damaged, saying which file it was."""
    _damage(run.data_dir / "vocab.json", "garbage")
    assert cli_main(["pipeline", "--run", str(run.root), "--stages", "data"]) == 0
    captured = capsys.readouterr()
    assert "data: data/vocab.json changed since it ran; recomputing" in captured.err and "data: wrote" in captured.out
    assert json.loads((run.data_dir / "vocab.json").read_text())["names"][0] == "e0"


@pytest.mark.parametrize("text", ['{"data": {"fingerprint": ', '[1, 2]', '{"data": 5}'])
def test_corrupt_stages_json(run, capsys, text):
    run.stages_file.write_text(text)  # broken JSON, not an object, a stage record that is not an object
    for argv in (["pipeline", "--stages", "attribute"], ["attribute"], ["report"]):
        one_line_error(capsys, [argv[0], "--run", str(run.root), *argv[1:]], str(run.stages_file), "is corrupt", "delete it")
    assert run.stages_file.read_text() == text


@pytest.mark.parametrize("args, needles", [
    (["--top", "0"], ["--top", "must be an integer >= 1", "'0'"]),
    (["--top", "-1"], ["--top", "'-1'"]),
    (["--top", "two"], ["--top", "'two'"]),
    (["--examples", "-1"], ["--examples", "from 0 to 10", "'-1'"]),
    (["--examples", "11"], ["--examples", "'11'"]),
    (["--set", "task.n_entities=20"], ["unrecognized arguments: --set"]),  # query reads the run as it is
    (["--force"], ["unrecognized arguments: --force"]),
])
def test_query_arguments_out_of_range_or_meaningless(base, capsys, args, needles):
    err = argparse_error(capsys, ["query", "--run", str(base.root), "e3 r1 r2", *args], *needles)
    assert err.startswith("sae-ooc query: error:") and "`sae-ooc query --help`" in err  # the subcommand refused it


@pytest.mark.parametrize("args, needles", [
    (["r1 e1"], ["'r1 e1' is not a task prompt", "an entity then one or two relations"]),
    (["e1 e2 r1"], ["not a task prompt"]),
    (["e1"], ["not a task prompt"]),
    (["e1 r0 <pad>"], ["not a task prompt"]),
    (["e3 r1 r2", "--target", "r1"], ["--target 'r1' is a relation", "one entity e0..e11"]),
    (["e3 r1 r2", "--target", "e99"], ["--target 'e99' is not an entity of this task", "did you mean"]),
    (["e3 r1 x2"], ["unknown token 'x2'", "did you mean"]),
    (["e3 r1 r2 r0"], ["has 4 tokens"]),
])
def test_query_prompt_and_target_must_be_task_shaped(base, capsys, args, needles):
    err = one_line_error(capsys, ["query", "--run", str(base.root), *args], *needles)
    if "--target" in args:
        assert "prompt" not in err  # a bad target is named as the target


def test_set_echoes_what_the_user_typed(tmp_path, capsys):
    err = one_line_error(capsys, ["train", "--run", str(tmp_path / "r"), "--set", "train.stop_at_valid_id=yes"], "stop_at_valid_id", "'yes'")
    assert "True" not in err  # YAML reads `yes` as true; the message shows what was typed
    assert not (tmp_path / "r").exists()


def test_closed_pipe_ends_query_quietly(base, capsys):
    argv = ["query", "--run", str(base.root), "e3 r1 r2", "--json", "--full", "--top", "20", "--examples", "10"]
    assert cli_main(argv) == 0
    assert len(capsys.readouterr().out) > 4 * 65536  # far more than a pipe holds: the writer must meet the closed pipe
    cmd = [sys.executable, "-m", "sae_ooc.cli", *argv]
    writer = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    head = subprocess.run(["head", "-1"], stdin=writer.stdout, capture_output=True, text=True)
    writer.stdout.close()
    err = writer.stderr.read().decode()
    assert writer.wait(timeout=120) == 0 and head.stdout == "{\n"
    assert "BrokenPipeError" not in err and "Traceback" not in err and "Exception ignored" not in err, err


def test_deleted_upstream_output_is_not_skipped(run, capsys):
    """Remove RUN/attribution/ after attribute and circuit ran: circuit must say so, not 'unchanged, skipped'."""
    write_json(run.attribution_dir / "node_effects.json", {"nodes": []})
    mark_stages(run, ["attribute"])
    # circuit recorded as done with the very fingerprint it has while attribution/ is there
    fp = fingerprint(run, get_stage("circuit"), {})
    write_json(run.circuit_dir / "circuit.json", {})
    mark_stages(run, ["circuit"])
    rec = run.stage_record("circuit")
    run.record("circuit", {**rec, "fingerprint": fp})
    shutil.rmtree(run.attribution_dir)
    err = one_line_error(capsys, ["circuit", "--run", str(run.root)], "'attribute'", "attribution/node_effects.json is missing",
                         f"sae-ooc attribute --run {run.root}")
    assert "skipped" not in err
    assert json.loads(run.stages_file.read_text())["circuit"]["fingerprint"] == fp  # nothing rewritten on the way out


def test_query_reads_the_run_files_not_its_config(run, capsys):
    """query takes no --config: a config.yaml from an older version, or a damaged one, does not stop it."""
    (run.root / "config.yaml").write_text("train:\n  stop_at_test_id: 0.9\n  [broken")
    assert cli_main(["query", "--run", str(run.root), "e3 r1 r2"]) == 0
    assert capsys.readouterr().out.startswith("prompt  e3 r1 r2")
    one_line_error(capsys, ["pipeline", "--run", str(run.root)], "config.yaml")  # the stages do read it


def test_written_files_follow_the_users_umask(tmp_path, monkeypatch):
    """The temp-file-then-rename path must not leave files 0600 (mkstemp's mode): colleagues read shared runs."""
    import stat

    import sae_ooc.io as io_mod

    for umask, mode in ((0o022, 0o644), (0o077, 0o600), (0o002, 0o664)):
        monkeypatch.setattr(io_mod, "_UMASK", umask)  # read once at import, as the process's umask
        io_mod.write_json(tmp_path / f"{umask:o}.json", {"x": 1})
        assert stat.S_IMODE((tmp_path / f"{umask:o}.json").stat().st_mode) == mode


def test_edit_layers_beyond_the_model(run, capsys):
    """edit.layers [0, 5] on a 2-layer model: named before anything runs, not dropped (an edit of no layer crashed)."""
    config = (run.root / "config.yaml").read_bytes()
    one_line_error(capsys, ["edit", "--run", str(run.root), "--set", "edit.layers=[0,5]"], "edit.layers [5]", "2 layer(s)", "0..1")
    assert not run.edit_dir.exists() and run.stage_record("edit") is None
    # the refused value is not left in RUN/config.yaml, where the next command without --set would meet it again
    assert (run.root / "config.yaml").read_bytes() == config
    # nor when the pipeline meets it
    one_line_error(capsys, ["pipeline", "--run", str(run.root), "--stages", "edit", "--set", "edit.layers=[0,5]"], "edit.layers [5]")
    assert (run.root / "config.yaml").read_bytes() == config


@pytest.mark.parametrize("args, needles", [
    (["--max-edges", "-5"], ["--max-edges", "integer >= 0", "'-5'"]),  # was taken as "all but the last 5 edges"
    (["--max-nodes", "-1"], ["--max-nodes", "'-1'"]),
    (["--edge-threshold", "2"], ["--edge-threshold", "from 0 to 1", "'2'"]),
    (["--edge-threshold", "nan"], ["--edge-threshold", "'nan'"]),
    (["--min-abs-effect", "-1"], ["--min-abs-effect", "'-1'"]),
    (["--set", "train.lr=1"], ["sae-ooc export: error: unrecognized arguments: --set"]),  # export reads no config section
])
def test_export_options_out_of_range_or_meaningless(base, capsys, args, needles):
    config = (base.root / "config.yaml").read_bytes()
    argparse_error(capsys, ["export", "--run", str(base.root), *args], *needles)
    assert (base.root / "config.yaml").read_bytes() == config and not base.export_dir.exists()


def test_help_shows_defaults_and_only_meaningful_options(capsys):
    def help_of(cmd):
        with pytest.raises(SystemExit):
            cli_main([cmd, "--help"])
        return " ".join(capsys.readouterr().out.split())

    q = help_of("query")
    assert "(default: 3)" in q and "(default: runs/default)" in q and "--set" not in q and "--force" not in q
    e = help_of("export")
    assert "(default: 150)" in e and "--set" not in e and "--force" in e
    for stage in ("steer", "edit"):
        h = help_of(stage)
        assert "--set" in h and "--force" in h and "(default: cpu)" in h


def test_steer_and_edit_name_a_missing_or_changed_upstream(run, capsys):
    """The new stages go through the same checks: a deleted model is named with the command that rebuilds it."""
    shutil.rmtree(run.model_dir)
    for cmd in ("steer", "edit"):
        for force in ([], ["--force"]):
            one_line_error(capsys, [cmd, "--run", str(run.root), *force], "stage 'train'", "is missing", f"sae-ooc train --run {run.root}")
    assert not run.steer_dir.exists() and not run.edit_dir.exists()


@pytest.mark.parametrize("value", ["inf", "-inf", ".nan", "nan"])
def test_non_finite_numbers_are_refused(tmp_path, capsys, value):
    """analyze.noise_scale=inf passed `> 0` and wrote NaN causal-tracing results; nan passes every `not <= 0` check."""
    one_line_error(capsys, ["analyze", "--run", str(tmp_path / "r"), "--set", f"analyze.noise_scale={value}"],
                   "'analyze.noise_scale' must be a finite number")
    assert not (tmp_path / "r").exists()


def test_steer_hooks_without_an_sae_name_the_key(run, capsys):
    one_line_error(capsys, ["steer", "--run", str(run.root), "--set", "steer.hooks=[blocks.1.hook_mlp_out]"],
                   "steer.hooks: no trained SAE for blocks.1.hook_mlp_out", "--set steer.hooks=[", "or [] for every hook")
    assert "hook_mlp_out" not in (run.root / "config.yaml").read_text() and not run.steer_dir.exists()


def test_dynamics_refuses_a_run_without_checkpoints_and_unknown_sae_hooks(run, capsys):
    """A run trained with train.n_checkpoints 0 crashed in the replay (max() of nothing); a bad dynamics.sae_hooks was
    named as harvest.hooks after minutes of work. Both are named before anything runs."""
    from sae_ooc.dynamics.dynamics import _check_inputs, run_dynamics
    from sae_ooc.errors import UserError
    from sae_ooc.models.hooked import load_model, save_model

    with pytest.raises(UserError, match=r"no step_0 checkpoint .*--set train.n_checkpoints=12"):
        run_dynamics(run)
    step0 = run.model_dir / "checkpoints" / "step_0"
    save_model(load_model(run.model_dir), step0)
    write_json(step0 / "trainer_state.json", {"step": 0})
    (step0 / "optimizer.json").write_text("{}")  # what train's _complete asks of a checkpoint
    (step0 / "optimizer.safetensors").write_bytes(b"")
    with pytest.raises(UserError) as e:
        _check_inputs(run, ["blocks.7.hook_resid_pre"])
    assert "dynamics.sae_hooks: blocks.7.hook_resid_pre not in this 2-layer model" in str(e.value) and "harvest" not in str(e.value)
    _check_inputs(run, ["blocks.1.hook_resid_pre"])
    with pytest.raises(UserError, match=r"dynamics.das_hooks: blocks.9.hook_resid_post not in this 2-layer model.*--set dynamics.das_hooks="):
        _check_inputs(run, ["blocks.1.hook_resid_pre"], ["blocks.9.hook_resid_post"])
    _check_inputs(run, ["blocks.1.hook_resid_pre"], ["blocks.1.hook_resid_post"])


def test_browse_out_onto_a_file_or_inside_the_site(run, tmp_path, capsys):
    """--out under a file crashed with FileExistsError after the whole site was built; --out inside the site copied the
    site into itself (one level deeper on every rerun). Refused in one line, a bad --out before any page is built."""
    from sae_ooc.errors import UserError
    from sae_ooc.browse.copy import copy_site
    from sae_ooc.browse.paths import MARKER

    f = tmp_path / "notes.txt"
    f.write_text("mine")
    for out in (f, f / "site"):
        one_line_error(capsys, ["browse", "--run", str(run.root), "--out", str(out)], f"{f} is a file, not a folder")
    assert not run.browse_dir.exists() and f.read_text() == "mine"
    site = tmp_path / "site"
    site.mkdir()
    (site / MARKER).write_text("{}")
    with pytest.raises(UserError, match="inside the site it copies"):
        copy_site(site, site / "copy")
    assert sorted(p.name for p in site.iterdir()) == [MARKER]
