"""The stage table: every stage of the pipeline, what it reads, what it owns and which function runs it.

This table is the only place the stage graph is written down. The CLI's subcommands, `sae-ooc pipeline`,
`sae_ooc.pipeline.run`, fingerprints and skipping are all driven by it. Adding a stage is one module with a
`run_<stage>(run, force=False, **options) -> dict | None` function plus one `Stage(...)` line here
(docs/ARCHITECTURE.md has a worked example).

The contract of a stage function:
- it reads only the outputs of its `upstream` stages and writes only under its own `outputs` (paths relative
  to the run directory; a folder owns everything under it); no stage rewrites another stage's file;
- it never decides whether it is up to date: `sae_ooc.pipeline` calls it only when its fingerprint (config keys
  + options + the digests of its upstream stages' outputs) changed or its outputs are missing or altered;
- `force=True` means recompute from scratch (no resuming from a checkpoint);
- it returns a JSON-able dict of facts worth recording in RUN/stages.json (sizes, headline numbers), or None
  when it stopped before finishing (then the stage is not marked done and a rerun resumes it);
- the device is `run.device`.

This module imports nothing heavy: `sae-ooc --help` and config errors answer before torch is imported.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable

from sae_ooc.sections.analyze import ANALYSIS_NAMES  # plain names: no torch


@dataclass(frozen=True)
class Stage:
    name: str  # subcommand, key in RUN/stages.json
    run: str  # "module:function" of the stage function, imported only when the stage runs
    config: tuple[str, ...]  # config sections ("train") or keys ("attribution.method") the outputs depend on
    upstream: tuple[str, ...]  # stages whose outputs it reads
    outputs: tuple[str, ...]  # paths under the run directory this stage alone writes
    command: str  # module of the CLI adapter: add_arguments(parser) and main(run, args)
    # options (keyword arguments of the stage function) that change its outputs, so enter its fingerprint
    fingerprint_options: tuple[str, ...] = field(default=())
    always: bool = False  # cheap and reads everything: run every time (the report)
    # False: a command of its own (`sae-ooc <name>`), left out of `sae-ooc pipeline` unless named in --stages;
    # its outputs are recorded and checked like any stage's
    in_pipeline: bool = True
    # a stage of independent parts (analyze's analyses): the option `parts_option` names the parts to run ("all" or
    # comma-separated), RUN/stages.json records the fingerprint each part was computed under, and a rerun computes only
    # the requested parts whose fingerprint is not the current one (`analyze dla --force`, then `pipeline`: dla is current)
    parts: tuple[str, ...] = ()
    parts_option: str = ""

    def function(self) -> Callable:
        mod, fn = self.run.split(":")
        return getattr(importlib.import_module(mod), fn)


STAGES: tuple[Stage, ...] = (
    Stage("data", "sae_ooc.tasks.data:run_data", ("task", "model.path", "model.name", "model.source", "model.run"), (), ("data",), "sae_ooc.commands.data"),
    Stage("train", "sae_ooc.models.train:run_train", ("model", "train"), ("data",), ("model",), "sae_ooc.commands.train"),
    Stage("harvest", "sae_ooc.activations.harvest:run_harvest", ("harvest",), ("data", "train"), ("activations",),
          "sae_ooc.commands.harvest"),
    Stage("train-sae", "sae_ooc.saes.train_sae:run_train_sae", ("sae",), ("harvest",), ("saes",), "sae_ooc.commands.train_sae"),
    Stage("eval-sae", "sae_ooc.saes.eval_sae:run_eval_sae", ("sae_eval", "sae.threads", "sae.workers", "sae.hooks", "model"),
          ("data", "train", "harvest", "train-sae"),
          ("sae_eval",), "sae_ooc.commands.eval_sae"),
    Stage("attribute", "sae_ooc.circuits.attribute:run_attribute", ("attribution",), ("data", "train", "train-sae"),
          ("attribution",), "sae_ooc.commands.attribute", fingerprint_options=("validate",)),
    Stage("circuit", "sae_ooc.circuits.circuit:run_circuit", ("circuit", "attribution.batch_size", "attribution.ig_steps",
                                                              "attribution.verify_top", "attribution.exact_batch_size"),
          ("data", "train", "train-sae", "eval-sae", "attribute"), ("circuit",), "sae_ooc.commands.circuit"),
    Stage("variable-circuit", "sae_ooc.circuits.variable_circuit:run_variable_circuit",
          ("variables", "circuit.heldout_fraction", "circuit.seed", "circuit.mean_examples"),
          ("data", "train", "train-sae", "eval-sae", "attribute"), ("variable_circuit",), "sae_ooc.commands.variable_circuit"),
    Stage("variables", "sae_ooc.causal.variables:run_variables", ("causal", "task"), ("data", "train", "harvest", "train-sae", "eval-sae"),
          ("variables",), "sae_ooc.commands.variables"),
    Stage("export", "sae_ooc.export.export:run_export", (), ("circuit",), ("export",), "sae_ooc.commands.export",
          fingerprint_options=("max_nodes", "min_abs_effect", "edge_threshold", "max_edges")),
    Stage("analyze", "sae_ooc.analyses.analyze:run_analyze", ("analyze", "sae.eval_fraction", "sae.seed", "sae_eval.positions", "model",
                                                           "task.family"),
          ("data", "train", "harvest"),
          ("analyze",), "sae_ooc.commands.analyze", parts=ANALYSIS_NAMES, parts_option="names"),
    Stage("steer", "sae_ooc.interventions.steer:run_steer", ("steer", "task"), ("data", "train", "train-sae", "eval-sae"),
          ("steer",), "sae_ooc.commands.steer"),
    Stage("edit", "sae_ooc.interventions.edit:run_edit", ("edit", "task"), ("data", "train"), ("edit",), "sae_ooc.commands.edit"),
    Stage("browse", "sae_ooc.browse.browse:run_browse", ("sae_eval.seed", "sae_eval.dense_threshold", "sae.hooks"),
          ("data", "train", "harvest", "train-sae", "eval-sae", "attribute", "circuit", "variable-circuit", "export"), ("browse",),
          "sae_ooc.commands.browse"),
    Stage("dynamics", "sae_ooc.dynamics.dynamics:run_dynamics", ("dynamics", "harvest", "sae", "sae_eval", "model", "train", "task",
                                                              "causal"),
          ("data", "train", "harvest"), ("dynamics",), "sae_ooc.commands.dynamics", in_pipeline=False),
    Stage("report", "sae_ooc.report.report:run_report", (),
          ("data", "train", "train-sae", "eval-sae", "attribute", "circuit", "variable-circuit", "variables", "export", "analyze", "steer",
           "edit", "browse"),
          ("REPORT.md", "summary.json"), "sae_ooc.commands.report", always=True),
)

STAGE_NAMES: tuple[str, ...] = tuple(s.name for s in STAGES)
PIPELINE_STAGES: tuple[str, ...] = tuple(s.name for s in STAGES if s.in_pipeline)  # what `sae-ooc pipeline` runs by default


def get_stage(name: str) -> Stage:
    for s in STAGES:
        if s.name == name:
            return s
    from sae_ooc.errors import UserError

    raise UserError(f"unknown stage {name!r}; stages: {', '.join(STAGE_NAMES)}")


def downstream(name: str) -> list[str]:
    """Every stage that reads `name`'s outputs, directly or through others, in pipeline order."""
    out: set[str] = {name}
    for s in STAGES:  # the table is in topological order
        if out.intersection(s.upstream):
            out.add(s.name)
    return [s.name for s in STAGES if s.name in out and s.name != name]
