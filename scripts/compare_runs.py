"""Do two run directories hold the same results? The documented check that a refactor changed no output.

    python scripts/compare_runs.py runs_before/default runs/default

Compares every metrics file (JSON, JSONL, Markdown), every tensor file (safetensors, exactly) and every figure
(PNG bytes, SVG text) of run A with its counterpart in run B, ignoring what legitimately differs between two runs: wall-clock
times, the run directory's own path and the stage bookkeeping (stages.json, checkpoints' trainer state). Files
that moved between layouts are matched through RENAMES. Exit 0 when everything matches, 1 with a list otherwise.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

# keys whose values are timings or locations, not results
VOLATILE = {"seconds", "elapsed_s", "minutes", "tokens_per_s", "wall_s", "run", "fingerprint", "summary", "settings", "timing_s", "root"}
# module paths named in text fields that the layout change moved (old -> new)
MODULES = {"sae_ooc.circuits.prune": "sae_ooc.prune"}
SKIP = re.compile(r"(^query_cache/|^stages\.json$|^config\.yaml$|trainer_state\.json$|^REPORT\.md$|(^|/)\.|progress\.json$|/checkpoints/.*\.json$)")
# layout before the stage table (left) -> after (right); eval-sae's part of saes/<hook>/metrics.json moved to sae_eval/
RENAMES = [
    (re.compile(r"^figures/(.*)$"), r"model/\1"),
    (re.compile(r"^saes/summary\.md$"), r"sae_eval/summary.md"),
    (re.compile(r"^saes/(alignment_.*)$"), r"sae_eval/\1"),
]


def _is_timing(key: str) -> bool:
    return key in VOLATILE or key.endswith(("_minutes", "_s")) or key.startswith(("speedup", "seconds"))


def strip(obj):
    if isinstance(obj, dict):
        if isinstance(obj.get("name"), str) and _is_timing(obj["name"].rsplit(".", 1)[-1]):
            obj = {k: v for k, v in obj.items() if k != "value"}  # summary.json's number of a timing (a speedup)
        return {k: strip(v) for k, v in obj.items() if not _is_timing(k)}
    if isinstance(obj, list):
        return [strip(v) for v in obj]
    if isinstance(obj, str):
        for new, old in MODULES.items():
            obj = obj.replace(new, old)
    return obj


def load_json_like(path: Path):
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return json.loads(path.read_text())


def counterpart(a: Path, b: Path, rel: str) -> list[Path]:
    for pat, rep in RENAMES:
        if pat.match(rel):
            return [b / pat.sub(rep, rel)]
    m = re.match(r"^saes/([^/]+)/metrics\.json$", rel)
    if m and not (a / "sae_eval").exists():  # A in the layout before eval-sae had its own folder: one file became two
        return [b / rel, b / "sae_eval" / m.group(1) / "metrics.json"]
    return [b / rel]


def same_tensors(x: Path, y: Path) -> bool:
    import torch
    from safetensors.torch import load_file

    tx, ty = load_file(str(x)), load_file(str(y))
    return tx.keys() == ty.keys() and all(torch.equal(tx[k], ty[k]) for k in tx)


def compare(a: Path, b: Path) -> list[str]:
    problems = []
    n = 0
    for fa in sorted(p for p in a.rglob("*") if p.is_file()):
        rel = fa.relative_to(a).as_posix()
        if SKIP.search(rel):
            continue
        fbs = counterpart(a, b, rel)
        if not all(f.exists() for f in fbs):
            problems.append(f"{rel}: no counterpart in {b} ({', '.join(str(f) for f in fbs)})")
            continue
        n += 1
        if fa.suffix == ".safetensors":
            if not same_tensors(fa, fbs[0]):
                problems.append(f"{rel}: tensors differ")
        elif fa.suffix in (".json", ".jsonl"):
            va = strip(load_json_like(fa))
            vb = {}
            for f in fbs:
                part = strip(load_json_like(f))
                vb = {**vb, **part} if isinstance(part, dict) else part
            if va != vb:
                problems.append(f"{rel}: contents differ")
        elif fa.suffix == ".png":
            if fa.read_bytes() != fbs[0].read_bytes():
                problems.append(f"{rel}: image differs")
        elif fa.suffix in (".md", ".svg", ".dot", ".html", ".txt"):
            ta, tb = fa.read_text().replace(str(a), "RUN"), fbs[0].read_text().replace(str(b), "RUN")
            if ta != tb:
                problems.append(f"{rel}: text differs")
    print(f"compared {n} files of {a} with {b}: {len(problems)} differ")
    return problems


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python scripts/compare_runs.py RUN_A RUN_B")
    bad = compare(Path(sys.argv[1]), Path(sys.argv[2]))
    for line in bad:
        print("  " + line)
    sys.exit(1 if bad else 0)
