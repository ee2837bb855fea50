"""Fixtures shared by the test files. The end-to-end ones are built once per test session and copied by tests
that change them; builders that make runs without the train and SAE stages live in circuit_fixtures.py.

- `tiny_cfg`, `tiny_task`: configs/tiny.yaml and its generated task (no files).
- `harvested_run`: configs/tiny.yaml through data → train (30 steps) → harvest (shards of 128 tokens). Read-only:
  tests that modify a run copy it first with `copy_run`.
- `natural_trained`: a small configs/natural_tiny.yaml task (16 entities, NATURAL_SETTINGS) through data → train
  (100 steps: every train fact learnt, few two-hop answers; two checkpoints, which `sae-ooc dynamics` reads).
  Read-only: copy it with `copy_run(..., config=NATURAL)`.
- `small_run`: configs/small.yaml, a model that composes, through data → train → harvest → train-sae → feature labels
  (tests/small_fixtures.py). For the mechanism tests (tests/test_mechanism_small.py); use it from that one file:
  pytest-xdist builds a session fixture once in every worker that asks for it.

`harvested_run` and `natural_trained` are built once per test session, not once per pytest-xdist worker (`shared_run`:
the first worker to ask builds the run in the session's temporary folder under a file lock, the other opens it). So
they are shared across processes too: a test that writes into one, even through a command, must copy it first.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from pathlib import Path

import pytest

from sae_ooc.config import load_config
from sae_ooc.rundir import RunDir
from sae_ooc.viz import plots
from sae_ooc.viz.plots import STRICT_ENV


# a figure that fails raises in tests (and in the CLI subprocesses they start) instead of warning: broken plot code must
# not hide behind the guard that keeps it from stopping a stage
os.environ.setdefault(STRICT_ENV, "1")

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.yaml"
NATURAL = ROOT / "configs" / "natural_tiny.yaml"


def _share_bytecode() -> None:
    """Let the test processes keep compiled bytecode when the environment forbids writing it (PYTHONDONTWRITEBYTECODE,
    set on this project's machines): otherwise each of them (the two xdist workers, every CLI subprocess and spawned
    worker pool) compiles sae_ooc's ~30,000 lines and pytest rewrites every test module again, ~3 CPU-s a process.
    Python writes the caches to the usual __pycache__ folders (git-ignored); processes started from here, xdist's
    workers among them, inherit the setting. Not a PYTHONPYCACHEPREFIX: Python then reads every module's bytecode from
    that folder alone, so in a fresh clone each process would compile torch, transformers, TransformerLens and SAELens
    anew (~13 CPU-s each) instead of reading what pip compiled into site-packages at install."""
    if not (sys.dont_write_bytecode or os.environ.get("PYTHONDONTWRITEBYTECODE")):
        return  # Python keeps its own __pycache__ folders
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    sys.dont_write_bytecode = False


_share_bytecode()

SHARD = 128  # the tiny task has ~450 tokens: several shards per hook
HARVEST_SETTINGS = ("train.steps=30", "train.eval_every=30", "train.n_checkpoints=0", f"harvest.shard_tokens={SHARD}")
NATURAL_SETTINGS = ("task.n_entities=16", "task.n_relations=4", "task.facts_per_entity=2", "task.phi=1.0", "model.d_mlp=128",
                    "train.steps=100", "train.batch_size=128", "train.eval_every=100", "train.n_checkpoints=2")


def copy_run(run: RunDir, dest: Path, overrides=(), config: Path = TINY) -> RunDir:
    """A private copy of a shared run (timestamps kept, so the pipeline sees its stages as done), with its config
    plus `overrides`: stages whose config sections the overrides leave alone stay up to date."""
    shutil.copytree(run.root, dest, copy_function=shutil.copy2)
    base = NATURAL_SETTINGS if config == NATURAL else HARVEST_SETTINGS
    return RunDir(dest, load_config(config, [*base, *overrides]))


# CPU seconds of each costly test file (fixtures included), measured with the suite on 2 workers (2026-12-07, 20:19 UTC,
# at rest; the same files measure up to ~20% more at other hours of the shared host). The files are handed to the two
# workers costliest first, so that no long file starts last while the other worker idles (longest-processing-time-first
# scheduling); a file not listed costs a few seconds and follows in collection order. The shared runs (`shared_run`)
# cost their builder's file ~1 s (tiny) or ~4 s (natural).
FILE_CPU_SECONDS = {"test_mechanism_small.py": 20, "test_sae.py": 19, "test_natural_pipeline.py": 18,
                    "test_plots_edge_cases.py": 17, "test_dynamics.py": 11, "test_train.py": 10, "test_browse.py": 10,
                    "test_finetune_run.py": 9, "test_sweep.py": 8, "test_bad_input.py": 8, "test_analyze.py": 7, "test_serve.py": 6,
                    "test_pretrained_pipeline.py": 5, "test_export.py": 4, "test_circuit.py": 4, "test_diagram_layout.py": 3,
                    "test_query.py": 3, "test_families.py": 3}


# Figures: the tests build every figure through its plot function (its data, axes, artists: what fails on an empty
# table, a NaN or a negative error bar), but do not render or write it unless the test is marked `figures` or builds
# its run inside `rendered_figures()`. Rendering was about a third of the suite's CPU time (text layout, twice per
# file), and what it checks is checked where it is asked for: tests/test_plots_edge_cases.py renders every plot
# function with its edge cases, and each stage's own tests that read its figure files render them. CLI subprocesses
# started by tests render as users' commands do.
FIGURE_FORMATS = ("png", "svg")  # what sae_ooc.viz.plots.FORMATS holds outside the tests
plots.FORMATS = ()


@contextlib.contextmanager
def rendered_figures(formats=FIGURE_FORMATS):
    """Figures rendered and written (PNG + SVG by default) inside the block, e.g. while a module fixture builds the run
    whose figure files its tests read."""
    old = plots.FORMATS
    plots.FORMATS = tuple(formats)
    try:
        yield
    finally:
        plots.FORMATS = old


@pytest.fixture(autouse=True)
def _figure_files(request):
    marker = request.node.get_closest_marker("figures")
    if marker is None:
        yield
        return
    with rendered_figures(*marker.args):
        yield


def pytest_configure(config):
    config.addinivalue_line("markers", "figures(formats=('png', 'svg')): the test renders and writes figure files")


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: -FILE_CPU_SECONDS.get(item.path.name, 0))  # stable: a file's tests keep their order


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """Tests use tiny tensors: on 2 busy cores OpenMP's barriers make them many times slower on 2 threads than on 1."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="session")
def tiny_cfg():
    return load_config(TINY)


@pytest.fixture(scope="session")
def tiny_task(tiny_cfg):
    from sae_ooc.tasks.data import generate

    return generate(tiny_cfg.task)


def shared_run(tmp_path_factory, name: str, config: Path, settings, stages) -> RunDir:
    """`config` with `settings` run through `stages`, built once per test session. pytest-xdist builds a session fixture
    in every worker that asks for it; here the first worker builds it in the folder the workers share (the documented
    pytest-xdist pattern: the base temporary folder's parent, and a lock), and the others wait for it and open it."""
    from filelock import FileLock

    from sae_ooc.pipeline import run as run_pipeline

    cfg = load_config(config, list(settings))
    if os.environ.get("PYTEST_XDIST_WORKER") is None:  # one process: its own temporary folder
        folder = tmp_path_factory.mktemp(name)
    else:
        folder = tmp_path_factory.getbasetemp().parent / "shared" / name
        folder.mkdir(parents=True, exist_ok=True)
    done = folder / "built"
    with FileLock(str(folder / "build.lock")):
        run = RunDir(folder / "run", cfg)
        if not done.exists():
            shutil.rmtree(run.root, ignore_errors=True)  # a build that failed in another worker: start again
            with rendered_figures():  # whole runs, as users' are: tests read their stages' figure files
                results = run_pipeline(run, stages=list(stages))
            assert [r.name for r in results if r.ran and r.finished] == list(stages)
            done.touch()
    return run


@pytest.fixture(scope="session")
def harvested_run(tmp_path_factory) -> RunDir:
    return shared_run(tmp_path_factory, "harvested", TINY, HARVEST_SETTINGS, ["data", "train", "harvest"])


@pytest.fixture(scope="session")
def natural_trained(tmp_path_factory) -> RunDir:
    return shared_run(tmp_path_factory, "natural", NATURAL, NATURAL_SETTINGS, ["data", "train"])


@pytest.fixture(scope="session")
def small_run(tmp_path_factory) -> RunDir:
    from small_fixtures import build_small_run

    return build_small_run(tmp_path_factory.mktemp("small") / "run")


def typed(cls, d: dict):
    """A typed stage output (sae_ooc.records) from a partial dict: every key it lacks, here and in nested records, is None.
    For tests that build only the fields a reader or figure uses."""
    import typing
    from dataclasses import MISSING, fields

    from sae_ooc.records import Record, _hints

    def fill(hint, v):
        if isinstance(v, dict) and isinstance(hint, type) and issubclass(hint, Record):
            return typed(hint, v)
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if isinstance(v, list) and typing.get_origin(hint) is list and args:
            return [fill(args[0], x) for x in v]
        if isinstance(v, dict) and typing.get_origin(hint) is dict and len(args) == 2:
            return {k: fill(args[1], x) for k, x in v.items()}
        if len(args) == 1 and typing.get_origin(hint) in (typing.Union, __import__("types").UnionType):
            return fill(args[0], v)
        return v

    hints = _hints(cls)
    own = [f for f in fields(cls) if f.name != "extra" and not f.metadata.get("rest")]
    key = {f.name: f.metadata.get("key", f.name) for f in own}
    out = {key[f.name]: None for f in own if f.default is MISSING and f.default_factory is MISSING}  # required ones
    out.update(d)
    by_key = {k: n for n, k in key.items()}
    rest = next((f for f in fields(cls) if f.metadata.get("rest")), None)
    filled = {}
    for k, v in out.items():
        if k in by_key:
            filled[k] = fill(hints[by_key[k]], v)
        else:  # a data-named key: typed as the rest field's values
            filled[k] = fill(typing.get_args(hints[rest.name])[1], v) if rest else v
    return cls.from_json(filled)
