"""The package's structure: the folder order (LAYERS), no import cycles between modules or folders (function-local
imports included), stage modules named after their stage, small modules, a light CLI start."""

import ast
import subprocess
import sys
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "sae_ooc"
MAX_LINES = 400

# The first-level packages and modules of sae_ooc/, bottom to top: one may import only those at its level or below
# (and no two at one level may import each other both ways). Drawing (viz) sits on the ground floor: it takes plain
# data and returns or saves a figure; the computing packages follow in the order they build on each other; the
# readers of finished stage outputs (browse, export, query, report, compare) sit above every producer, the commands on
# top. docs/ARCHITECTURE.md prints this list (test_architecture_doc_lists_the_layers).
LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors",),
    ("io", "stats", "threads", "typed_yaml", "registry", "hooks", "records"),
    ("viz",),
    ("sections",),
    ("config", "config_view"),
    ("rundir", "runlock"),
    ("tasks",),
    ("models",),
    ("activations",),
    ("saes",),
    ("circuits",),
    ("analyses",),
    ("interventions",),
    ("causal",),
    ("dynamics",),
    ("stages", "pipeline", "formats"),
    ("sweep",),
    ("browse",),
    ("export",),
    ("query", "report", "compare"),
    ("serve",),
    ("commands",),
    ("cli", "train_sae_cli"),
)


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(mod: str, path: Path, modules) -> set[str]:
    """The sae_ooc modules `mod` imports anywhere in its body (top level or inside functions), relative imports resolved."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # from . import x / from ..y import z
                pkg = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
                pkg = pkg[: len(pkg) - (node.level - 1)]
                base = ".".join(pkg + ([node.module] if node.module else []))
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        for t in targets:
            while t and t not in modules:  # `import sae_ooc.a.b.name`: the module it names
                t = t.rpartition(".")[0]
            if t and t != mod and t != "sae_ooc":  # the package root only holds __version__
                out.add(t)
    return out


@cache  # parsed once for the three tests that read it (callers do not change it)
def import_graph() -> dict[str, set[str]]:
    """module -> sae_ooc modules it imports anywhere in its body (top level or inside functions)."""
    modules = {module_name(p): p for p in PKG.rglob("*.py")}
    return {mod: imported_modules(mod, path, modules) for mod, path in modules.items()}


def folder(mod: str) -> str:
    """The first-level package or module of sae_ooc a module belongs to: sae_ooc.saes.store -> saes."""
    return mod.split(".")[1]


def folder_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for m, targets in graph.items():
        if m == "sae_ooc":
            continue
        out.setdefault(folder(m), set()).update(folder(t) for t in targets if folder(t) != folder(m))
    return out


def layer_violations(folders: dict[str, set[str]], layers=LAYERS) -> list[str]:
    """Every import of a folder from a higher layer, and every folder LAYERS does not list."""
    level = {name: i for i, names in enumerate(layers) for name in names}
    bad = [f"{f} is not in LAYERS" for f in sorted(folders) if f not in level]
    bad += [f"{f} (layer {level[f]}) imports {t} (layer {level[t]})" for f, ts in sorted(folders.items()) if f in level
            for t in sorted(ts) if t in level and level[t] > level[f]]
    return bad


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state and (c := visit(n)):
                return c
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (c := visit(m)):
            return c
    return None


def test_cycle_finder_finds_a_planted_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_layer_check_finds_a_planted_inversion():
    layers = (("low",), ("mid", "mid2"), ("high",))
    assert layer_violations({"low": set(), "mid": {"low", "mid2"}, "high": {"mid"}}, layers) == []
    assert layer_violations({"low": {"high"}, "mid": set(), "high": set()}, layers) == ["low (layer 0) imports high (layer 2)"]
    assert layer_violations({"new": set()}, layers) == ["new is not in LAYERS"]
    # a function-local import counts: a computing module that reads the report inside a function is an inversion
    graph = {"sae_ooc.saes.x": {"sae_ooc.report.doc"}, "sae_ooc.report.doc": set()}
    assert layer_violations(folder_graph(graph)) == [f"saes (layer 9) imports report (layer {_level('report')})"]


def _level(name: str) -> int:
    return next(i for i, names in enumerate(LAYERS) if name in names)


def test_relative_and_function_local_imports_are_seen(tmp_path):
    pkg = tmp_path / "sae_ooc" / "a"
    pkg.mkdir(parents=True)
    (pkg / "x.py").write_text("def f():\n    from .y import g\n    from sae_ooc import b\n    import sae_ooc.c.d.name\n")
    modules = {"sae_ooc.a.x": None, "sae_ooc.a.y": None, "sae_ooc.b": None, "sae_ooc.c.d": None}
    assert imported_modules("sae_ooc.a.x", pkg / "x.py", modules) == {"sae_ooc.a.y", "sae_ooc.b", "sae_ooc.c.d"}


def test_every_folder_imports_only_folders_at_or_below_its_layer():
    graph = import_graph()
    folders = folder_graph(graph)
    assert {f for names in LAYERS for f in names} == set(folders), "LAYERS lists exactly the first-level packages and modules"
    assert layer_violations(folders) == []


def test_no_import_cycle_between_folders():
    cycle = find_cycle(folder_graph(import_graph()))
    assert cycle is None, " -> ".join(cycle)


def test_stage_modules_are_named_after_their_stage():
    """One convention: stage `eval-sae` is `run_eval_sae` in a module `eval_sae.py` of the package of its concern, and its
    CLI adapter is `commands/eval_sae.py`."""
    from sae_ooc.stages import STAGES

    for s in STAGES:
        mod, fn = s.run.split(":")
        stem = s.name.replace("-", "_")
        assert mod.rsplit(".", 1)[1] == stem and fn == f"run_{stem}", s.run
        assert s.command == f"sae_ooc.commands.{stem}", s.command


def test_no_import_cycles_even_through_function_local_imports():
    graph = import_graph()
    assert len(graph) > 20
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle)


def test_no_module_over_the_line_budget():
    long = {module_name(p): n for p in PKG.rglob("*.py") if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, long


def test_help_and_config_errors_do_not_import_torch(tmp_path):
    code = (
        "import sys\n"
        "from sae_ooc.cli import main\n"
        "for argv in (['--help'], ['train', '--help'], ['data', '--set', 'nope.x=1', '--run', sys.argv[1]]):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "heavy = [m for m in ('torch', 'transformer_lens', 'sae_lens', 'datasets', 'matplotlib') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "r")], capture_output=True, text=True, cwd=ROOT)
    assert "HEAVY []" in out.stdout, out.stdout[-500:] + out.stderr[-500:]
    assert "unknown" in out.stderr or "nope" in out.stderr


def test_architecture_doc_lists_the_layers():
    """docs/ARCHITECTURE.md prints LAYERS, top first, one line per layer: `layer N: a, b`."""
    import re

    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    doc = {int(n): tuple(x.strip() for x in names.split(",")) for n, names in re.findall(r"^\s*layer (\d+): (.+?)\s*$", text, re.M)}
    assert doc == dict(enumerate(LAYERS))


def test_architecture_doc_lists_the_stage_table():
    """docs/ARCHITECTURE.md's table is a copy of sae_ooc/stages.py: same stages, functions, upstream and outputs."""
    from sae_ooc.stages import STAGES

    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    rows = [line.split("|")[1:-1] for line in text.splitlines() if line.startswith("| `")]
    doc = {cells[0].strip().strip("`"): [c.strip() for c in cells[1:]] for cells in rows if len(cells) == 5}
    assert list(doc) == [s.name for s in STAGES]
    for s in STAGES:
        fn, _, ups, outs = doc[s.name]
        assert fn.strip("`") == s.run.replace("sae_ooc.", "")
        assert [u.strip() for u in ups.split(",")] == (list(s.upstream) or ["—"])
        assert [o.strip().strip("`").rstrip("/") for o in outs.split(",")] == list(s.outputs)


def test_each_registry_reads_its_names_from_the_one_list():
    """Config validation and every registry read the same torch-free list (sae_ooc.registry.NAMES): a name must be
    listed there to be registered, and every listed name is registered."""
    import pytest

    from sae_ooc import config
    from sae_ooc.analyses.analyze import ANALYSES
    from sae_ooc.circuits.ablation import ABLATIONS
    from sae_ooc.circuits.methods import ATTRIBUTION_METHODS
    from sae_ooc.registry import NAMES, Registry
    from sae_ooc.saes.architectures import ARCHITECTURES
    from sae_ooc.tasks.data import FAMILIES

    registries = (FAMILIES, ATTRIBUTION_METHODS, ABLATIONS, ARCHITECTURES, ANALYSES)
    assert sorted(r.key for r in registries) == sorted(NAMES)
    for r in registries:
        r.check()
        assert r.expected is NAMES[r.key] and set(r.names()) == set(NAMES[r.key])
    # config's tuples are the same objects, not copies
    assert config.TASK_FAMILIES is NAMES["task.family"] and config.ANALYSIS_NAMES is NAMES["analysis"]
    assert config.ATTRIBUTION_METHODS is NAMES["attribution.method"] and config.ABLATIONS is NAMES["ablation"]
    assert config.SAE_ARCHITECTURES is NAMES["sae.architecture"]
    with pytest.raises(ValueError, match="not in sae_ooc.registry.NAMES"):
        Registry("ablation").register("median")
    half = Registry("ablation")
    half.register("mean")(len)
    with pytest.raises(AssertionError, match="NAMES lists"):
        half.check()
    with pytest.raises(ValueError, match="no list of names"):
        Registry("nope")
