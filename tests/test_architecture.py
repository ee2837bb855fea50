"""The package's structure: no import cycles (function-local imports included), small modules, a light CLI start."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "sae_ooc"
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """module -> sae_ooc modules it imports anywhere in its body (top level or inside functions)."""
    modules = {module_name(p): p for p in PKG.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for mod, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for t in targets:
                if t in modules and t != mod and t != "sae_ooc":  # the package root only holds __version__
                    graph[mod].add(t)
    return graph


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
    from sae_ooc.analyses.stage import ANALYSES
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
