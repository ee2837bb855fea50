"""Running stages: the library entry point behind `sae-ooc <stage>` and `sae-ooc pipeline`.

    from sae_ooc.pipeline import run
    run("runs/default", config="configs/default.yaml")            # every stage, skipping those up to date
    run("runs/default", stages=["attribute", "circuit"], force=True)

A stage is up to date when RUN/stages.json records the same fingerprint (its config keys, its options and the
digests of its upstream stages' outputs) and every file it recorded as output is still there unchanged (size and
mtime, or failing that the same sha256). Fingerprints hash upstream *outputs*, not upstream inputs, so a stage
recomputed to the same files leaves everything downstream skipped, and a deleted or edited output makes its
stage (and then everything downstream) run again.
"""

from __future__ import annotations

import copy
import inspect
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from sae_ooc.config_view import ConfigView
from sae_ooc.errors import UserError
from sae_ooc.io import sha256_file, sha256_json
from sae_ooc.rundir import RunDir
from sae_ooc.runlock import run_lock
from sae_ooc.sections.check import is_hashed
from sae_ooc.stages import PIPELINE_STAGES, STAGES, Stage, get_stage


@dataclass
class StageResult:
    name: str
    ran: bool  # False: up to date, skipped
    finished: bool = True  # False: stopped early (resumable); not recorded as done
    info: dict = field(default_factory=dict)
    seconds: float = 0.0


# outputs ------------------------------------------------------------------------------------------
def output_files(run: RunDir, stage: Stage) -> list[Path]:
    files: list[Path] = []
    for rel in stage.outputs:
        p = run.root / rel
        if p.is_file():
            files.append(p)
        elif p.is_dir():
            files += sorted(q for q in p.rglob("*") if q.is_file() and not q.name.startswith("."))
    return files


def _stamp(path: Path) -> list:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def record_outputs(run: RunDir, stage: Stage) -> dict[str, list]:
    """{relative path: [size, mtime_ns, sha256]} of every file the stage owns now."""
    return {p.relative_to(run.root).as_posix(): _stamp(p) + [sha256_file(p)] for p in output_files(run, stage)}


def outputs_intact(run: RunDir, stage: Stage, recorded: dict[str, list] | None) -> str | None:
    """None when every recorded output is there unchanged, else what is wrong (for messages)."""
    if not recorded:
        return "no outputs recorded"
    for rel, (size, mtime, sha) in recorded.items():
        p = run.root / rel
        if not p.is_file():
            return f"{rel} is missing"
        stamp = _stamp(p)
        if stamp != [size, mtime] and (stamp[0] != size or sha256_file(p) != sha):
            return f"{rel} changed"
    return None


def outputs_digest(recorded: dict[str, list]) -> str:
    return sha256_json({rel: v[2] for rel, v in sorted(recorded.items())})


# fingerprints ----------------------------------------------------------------------------------------
def config_part(run: RunDir, stage: Stage) -> dict:
    cfg = run.cfg
    out = {}
    for key in stage.config:
        section, _, attr = key.partition(".")
        if attr and not is_hashed(getattr(cfg, section), attr):
            continue  # declared so that the stage may read it, but it changes how fast, never what (sae.workers)
        out[key] = cfg.section(section)[section] if not attr else getattr(getattr(cfg, section), attr)
    return out


def stage_defaults(stage: Stage) -> dict:
    """The stage function's own keyword defaults: an option left out fingerprints like the same value passed."""
    if not stage.fingerprint_options:
        return {}
    params = inspect.signature(stage.function()).parameters
    return {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}


def fingerprint(run: RunDir, stage: Stage, options: dict) -> str:
    """What the stage's outputs depend on. Raises a UserError naming the command when an upstream stage is
    missing or its outputs were altered since it ran."""
    ups = {}
    for u in stage.upstream:
        rec = run.stage_record(u)
        if rec is None:
            raise UserError(f"stage '{u}' has not been run in {run.root}; run `sae-ooc {u} --run {run.root}` (or `sae-ooc pipeline`) first")
        bad = outputs_intact(run, get_stage(u), rec.get("outputs"))
        if bad is not None:
            raise UserError(f"the outputs of stage '{u}' in {run.root} are not what it wrote ({bad}); "
                            f"rerun `sae-ooc {u} --run {run.root}` (or `sae-ooc pipeline --run {run.root}`)")
        ups[u] = rec["digest"]
    # the CLI passes every option: importing the stage's module (torch, seconds) only to read defaults is for library calls
    defaults = stage_defaults(stage) if any(k not in options for k in stage.fingerprint_options) else {}
    opts = {k: options.get(k, defaults.get(k)) for k in stage.fingerprint_options}
    return sha256_json({"config": config_part(run, stage), "options": opts, "upstream": ups})


def is_up_to_date(run: RunDir, stage: Stage, fp: str) -> bool:
    rec = run.stage_record(stage.name)
    if rec is None or rec.get("fingerprint") != fp:
        return False
    bad = outputs_intact(run, stage, rec.get("outputs"))
    if bad is not None:  # its inputs are unchanged, its own files are not: say which file makes it run again
        print(f"{stage.name}: {bad} since it ran; recomputing", file=sys.stderr, flush=True)
    return bad is None


def stage_run(run: RunDir, stage: Stage) -> RunDir:
    """The run as `stage` sees it: its config holds only the keys the stage declares (sae_ooc.config_view), so a key
    read but not fingerprinted fails at once instead of leaving stale outputs skipped. A stage that always runs (the
    report) cannot be stale and sees everything."""
    if stage.always:
        return run
    view = copy.copy(run)
    view.cfg = ConfigView(run.cfg, stage.config, stage.name)
    return view


# parts ----------------------------------------------------------------------------------------------------
def requested_parts(stage: Stage, value) -> list[str]:
    """The parts `value` of the stage's parts option names ("all", None, or comma-separated), in the stage's order."""
    if value in (None, "", "all"):
        return list(stage.parts)
    names = {n.strip() for n in str(value).split(",") if n.strip()}
    return [p for p in stage.parts if p in names] + sorted(names - set(stage.parts))  # unknown ones: the stage refuses them


def parts_to_run(run: RunDir, stage: Stage, fp: str, force: bool, options: dict) -> tuple[list[str], dict[str, str]]:
    """(the requested parts to compute now, the part fingerprints to keep from the record): a part is current when the
    record holds it under `fp` and the stage's recorded outputs are intact."""
    requested = requested_parts(stage, options.get(stage.parts_option))
    rec = run.stage_record(stage.name) or {}
    done = rec.get("parts") if isinstance(rec.get("parts"), dict) else {}
    current = {p for p, f in done.items() if f == fp}
    if current and not force:
        bad = outputs_intact(run, stage, rec.get("outputs"))
        if bad is not None:  # which part owns the file is the stage's business: recompute every requested part
            print(f"{stage.name}: {bad} since it ran; recomputing", file=sys.stderr, flush=True)
            current, done = set(), {}  # the parts not requested now are not vouched for either
    if force:
        current = set()
    return [p for p in requested if p not in current], done


# running ------------------------------------------------------------------------------------------------
def run_stage(run: RunDir, name: str, force: bool = False, **options) -> StageResult:
    """Run one stage if it is stale (or `force`), record it in RUN/stages.json, and say what happened."""
    stage = get_stage(name)
    # a stage that always runs reads whatever its upstream stages left (the report of a partial run)
    fp = sha256_json({"always": name}) if stage.always else fingerprint(run, stage, options)
    parts: dict[str, str] | None = None
    if stage.parts:
        todo, parts = parts_to_run(run, stage, fp, force, options)
        if not todo:
            return StageResult(name, ran=False, info=run.stage_record(name).get("info", {}))
        options = {**options, stage.parts_option: ",".join(todo)}
        parts = {**{p: f for p, f in parts.items() if p not in todo}, **{p: fp for p in todo}}
    elif not force and not stage.always and is_up_to_date(run, stage, fp):
        return StageResult(name, ran=False, info=run.stage_record(name).get("info", {}))
    before = run.stage_record(name) if stage.always else None
    if not stage.always:  # (an always-run stage, the report, keeps its record: a rerun that changes nothing writes nothing)
        run.forget(name)  # a stage half-rerun is not done, whatever it recorded before
    t0 = time.perf_counter()
    run.current_fingerprint = fp  # resumable stages tag their checkpoints with it
    info = stage.function()(stage_run(run, stage), force=force, **options)
    seconds = time.perf_counter() - t0
    if info is None:
        return StageResult(name, ran=True, finished=False, seconds=seconds)
    outputs = record_outputs(run, stage)
    record = {"fingerprint": fp, "digest": outputs_digest(outputs), "outputs": outputs, "seconds": round(seconds, 2), "info": info}
    if parts is not None:
        record["parts"] = parts
    if before is not None and all(before.get(k) == record[k] for k in ("fingerprint", "outputs", "info")):
        return StageResult(name, ran=True, info=info, seconds=seconds)  # its files are as recorded: stages.json stays untouched
    run.record(name, record)
    return StageResult(name, ran=True, info=info, seconds=seconds)


def run(run_dir: str | Path | RunDir, stages: list[str] | None = None, config=None, force: bool = False, device: str = "cpu",
        options: dict[str, dict] | None = None, on_result=None) -> list[StageResult]:
    """Run `stages` (default: every stage of the pipeline, in order; commands such as `dynamics` only when named) in `run_dir`, each only if stale unless `force`.

    `config`: a Config, a YAML path, or None for the run's saved config.yaml (else the built-in defaults).
    `options`: per-stage keyword options, e.g. {"attribute": {"validate": False}}. `on_result(StageResult)` is
    called after each stage (the CLI prints its summary there).
    """
    run_ = run_dir if isinstance(run_dir, RunDir) else RunDir.open(run_dir, config=config, device=device)
    names = list(stages) if stages is not None else list(PIPELINE_STAGES)
    for n in names:
        get_stage(n)
    results = []
    with run_lock(run_.root, command=f"sae_ooc.pipeline.run({str(run_.root)!r})"), run_.saved_config(force=force):
        for s in STAGES:
            if s.name not in names:
                continue
            r = run_stage(run_, s.name, force=force, **(options or {}).get(s.name, {}))
            results.append(r)
            if on_result is not None:
                on_result(r)
            if not r.finished:
                break
    return results
