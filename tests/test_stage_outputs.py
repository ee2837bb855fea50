"""Every stage's printed line names every file it wrote (issue #10), and names nothing it did not write.

The line's file phrase is parsed here independently of sae_ooc.commands.files_written: `DIR/ (a.{png,svg},
sub/ (b.json))` names DIR/a.png, DIR/a.svg and DIR/sub/b.json; `<name>` stands for one path segment.
"""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import copy_run

from sae_ooc.pipeline import StageResult, run_stage
from sae_ooc.stages import get_stage


def _expand(pattern: str) -> list[str]:
    """Brace alternatives, innermost first: 'a.{x,y}' -> ['a.x', 'a.y']."""
    m = re.search(r"\{([^{}]*)\}", pattern)
    if m is None:
        return [pattern]
    return [q for alt in m.group(1).split(",") for q in _expand(pattern[: m.start()] + alt + pattern[m.end():])]


def _parse_list(s: str, i: int) -> tuple[list[str], int]:
    """The comma-separated items from s[i] up to the matching ')', as paths; returns them and the index after ')'."""
    out = []
    while True:
        j, depth = i, 0
        while depth or not (s[j] in ",)" or s.startswith("/ (", j)):
            depth += (s[j] == "{") - (s[j] == "}")
            j += 1
        name = s[i:j]
        if s.startswith("/ (", j):
            sub, j = _parse_list(s, j + 3)
            out += [f"{name}/{p}" for p in sub]
        else:
            out.append(name)
        if s[j] == ")":
            return out, j + 1
        assert s.startswith(", ", j), s[j:]
        i = j + 2


def named_paths(line: str, run_root: Path, output: str) -> list[re.Pattern]:
    """Regexes for the files the line names under RUN/<output> (a folder, 'DIR/ (...)') or for RUN/<output> itself."""
    head = f"{run_root / output}"
    if f"{head}/ (" in line:
        items, _ = _parse_list(line, line.index(f"{head}/ (") + len(head) + 3)
    else:
        assert head in line, f"{head} not named in: {line}"
        items = [""]
    regexes = []
    for item in items:
        for p in _expand(item):
            parts = re.split(r"<[^>]+>", f"{output}/{p}" if p else output)
            regexes.append(re.compile("[^/]+".join(map(re.escape, parts))))
    return regexes


def written(run, stage: str) -> list[str]:
    """Every file under the stage's outputs (sae_ooc.stages), relative to the run; dot-files are temporary."""
    files = []
    for rel in get_stage(stage).outputs:
        p = run.root / rel
        found = [p] if p.is_file() else [q for q in p.rglob("*") if q.is_file() and not q.name.startswith(".")]
        files += [q.relative_to(run.root).as_posix() for q in found]
    return sorted(files)


def readme_patterns(stage: str) -> list[str]:
    """The backticked paths in the README stage table's "writes" cell for `stage`, braces expanded."""
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    row = next(line for line in readme.splitlines() if line.startswith(f"| `{stage}` |"))
    return [q for p in re.findall(r"`([^`]+)`", row.split(" | ")[2]) for q in _expand(p)]


def readme_unlisted(stage: str, files: list[str]) -> list[str]:
    """The files the README's table does not list for the stage. A path matches a pattern when some tail of it
    (whole segments) does; a folder pattern ('checkpoints/{latest,step_N}/') covers what is in it, except the
    stage's own output folder (listing `model/` alone names nothing). `*` and `<...>` stand for any name, `_N` for a number."""
    tops = {o.rstrip("/") + "/" for o in get_stage(stage).outputs}
    regexes = []
    for p in readme_patterns(stage):
        if p in tops or "." not in p and not p.endswith("/"):
            continue  # the stage's own folder, or a word (a split name) rather than a path
        rx = re.escape(p).replace(r"\*", "[^/]*").replace("_N", r"_\d+")
        rx = re.sub(r"<[^>]+>", "[^/]+", rx)
        regexes.append(re.compile(rx + ".*" if p.endswith("/") else rx))

    def listed(rel: str) -> bool:
        parts = rel.split("/")
        return any(r.fullmatch("/".join(parts[i:])) for r in regexes for i in range(len(parts)))
    return [f for f in files if not listed(f)]


def check_line(run, stage: str, result: StageResult) -> str:
    line = importlib.import_module(get_stage(stage).command).summarize(run, result)
    files = written(run, stage)
    assert files, f"{stage} wrote nothing"
    regexes = [r for out in get_stage(stage).outputs for r in named_paths(line, run.root, out)]
    unnamed = [f for f in files if not any(r.fullmatch(f) for r in regexes)]
    assert not unnamed, f"{stage}: {unnamed} not named in: {line}"
    phantom = [r.pattern for r in regexes if not any(r.fullmatch(f) for f in files)]
    assert not phantom, f"{stage}: names files it did not write ({phantom}): {line}"
    unlisted = readme_unlisted(stage, files)
    assert not unlisted, f"README's stage table does not list {unlisted} for {stage}"
    return line


@pytest.mark.parametrize("stage", ["data", "train", "harvest"])
def test_early_stages_name_every_file(harvested_run, stage):
    rec = harvested_run.stage_record(stage)
    line = check_line(harvested_run, stage, StageResult(stage, ran=True, info=rec["info"]))
    assert line.startswith(f"{stage}: ")


@pytest.mark.figures
def test_train_line_names_checkpoints_and_figures(harvested_run):
    line = check_line(harvested_run, "train", StageResult("train", ran=False, info=harvested_run.stage_record("train")["info"]))
    # the folders and figures issue #10 found missing, and the split the run stopped on
    assert "checkpoints/ (" in line and "accuracy.{png,svg}" in line and "valid_id" in line and "skipped" in line


# train-sae's and eval-sae's lines are checked where tests/test_sae.py runs those stages (its `sae_run` fixture and
# test_eval_sae_writes_metrics_labels_and_summary): a second SAE run here cost ~5 CPU-s


def test_a_skipped_stage_answers_without_importing_torch(harvested_run, tmp_path):
    """A no-op command must answer in about the time Python starts (issue #10: <= 2 s): its line comes from RUN/stages.json
    and small JSON files, not from modules that load torch (seconds on a busy machine)."""
    run = copy_run(harvested_run, tmp_path / "run")
    code = ("import sys\nfrom sae_ooc.cli import main\n"
            "codes = [main([s, '--run', sys.argv[1]]) for s in ('data', 'train', 'harvest')]\n"
            "print('CODES', codes, 'HEAVY', [m for m in ('torch', 'transformer_lens', 'sae_lens', 'datasets', 'matplotlib') if m in sys.modules])\n")
    out = subprocess.run([sys.executable, "-c", code, str(run.root)], capture_output=True, text=True, cwd=Path(__file__).parents[1])
    assert "CODES [0, 0, 0] HEAVY []" in out.stdout, out.stdout[-800:] + out.stderr[-800:]
    assert out.stdout.count("unchanged, skipped") == 3


def test_a_file_left_out_of_the_line_is_caught(harvested_run):
    """The checker itself: a line that drops a folder fails."""
    rec = harvested_run.stage_record("train")
    line = importlib.import_module("sae_ooc.commands.train").summarize(harvested_run, StageResult("train", ran=True, info=rec["info"]))
    regexes = named_paths(re.sub(r", checkpoints/ \(.*?\)\)", "", line), harvested_run.root, "model")
    assert any(not any(r.fullmatch(f) for r in regexes) for f in written(harvested_run, "train"))


def test_circuit_stages_name_every_file(tmp_path):
    from circuit_fixtures import make_run

    from sae_ooc.threads import torch_threads

    run = make_run(tmp_path, overrides=["circuit.top_n=5", "circuit.curve_sizes=[0,2]", "circuit.edge_counts=[2]",
                                        "circuit.random_edge_sets=2", "circuit.edge_check=2", "circuit.mean_examples=32",
                                        "circuit.prune_pairs=2", "attribution.n_pairs=6", "attribution.validate_pairs=2"])
    with torch_threads(1):  # tiny tensors: a second thread only adds OpenMP barrier waits on a shared machine
        for stage in ("attribute", "circuit", "export"):
            result = run_stage(run, stage)
            assert result.ran and result.finished
            line = check_line(run, stage, result)
    assert "prompt_graph.json" in line and "prompt_circuit.{" in line  # the example pair's drawings (issue #10)


def test_report_names_both_files_it_writes(harvested_run, tmp_path):
    run = copy_run(harvested_run, tmp_path / "run")
    line = check_line(run, "report", run_stage(run, "report"))
    assert f"{run.root / 'REPORT.md'}, {run.root / 'summary.json'}" in line


def test_the_readme_checker_catches_an_unlisted_file():
    assert readme_unlisted("circuit", ["circuit/circuit.json", "circuit/prompt_circuits.safetensors"]) == []
    assert readme_unlisted("circuit", ["circuit/new_thing.json"]) == ["circuit/new_thing.json"]
    assert readme_unlisted("train", ["model/checkpoints/step_200/optimizer.json", "model/checkpoints/latest/config.json"]) == []
    assert readme_unlisted("train", ["model/other/x.json"]) == ["model/other/x.json"]  # `model/` alone lists nothing
