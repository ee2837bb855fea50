"""The entity-name and relation-noun lists: shipped ones (data/names_<x>.txt, data/relations_<x>.txt) or files."""

from __future__ import annotations

from collections import Counter
from importlib import resources
from pathlib import Path

from sae_ooc.errors import UserError


def _read(spec: str, kind: str) -> tuple[list[str], str]:
    """Non-empty, non-comment lines of the shipped list `spec` or of the file at `spec`, and where they came from."""
    shipped = resources.files("sae_ooc.tasks.natural") / "data" / f"{kind}_{spec}.txt"
    key = f"task.natural.{kind}"
    if shipped.is_file():
        text, where = shipped.read_text(encoding="utf-8"), f"the shipped list '{spec}'"
    else:
        path = Path(spec).expanduser()
        try:
            text, where = path.read_text(encoding="utf-8"), str(path)
        except (OSError, UnicodeDecodeError) as e:
            ships = sorted(p.name[len(kind) + 1:-4] for p in (resources.files("sae_ooc.tasks.natural") / "data").iterdir()
                           if p.name.startswith(kind + "_"))
            raise UserError(f"{key}: cannot read {path} ({type(e).__name__}); give a shipped list ({', '.join(ships)}) "
                            f"or a readable UTF-8 file with one entry a line") from None
    lines = [" ".join(line.split()) for line in text.splitlines()]
    return [line for line in lines if line and not line.startswith("#")], where


def _no_duplicates(items: list[str], key: str, where: str) -> None:
    dup = sorted(k for k, n in Counter(items).items() if n > 1)
    if dup:
        shown = ", ".join(repr(d) for d in dup[:5]) + (f" and {len(dup) - 5} more" if len(dup) > 5 else "")
        raise UserError(f"{key}: {where} lists {shown} more than once; every entry must be distinct (remove the repeats)")


def load_names(spec: str) -> list[str]:
    """Distinct entity names of a list (an error names the duplicates)."""
    names, where = _read(spec, "names")
    _no_duplicates(names, "task.natural.names", where)
    if not names:
        raise UserError(f"task.natural.names: {where} has no names; give one name a line")
    return names


def load_relations(spec: str, need_inverse: bool) -> list[tuple[str, str | None]]:
    """(noun, inverse noun or None) pairs of a relation list; every noun, inverses included, distinct."""
    lines, where = _read(spec, "relations")
    pairs = []
    for line in lines:
        noun, _, inverse = (p.strip() for p in line.partition("|"))
        if not noun or ("|" in line and not inverse):
            raise UserError(f"task.natural.relations: {where} has the line {line!r}; write 'noun' or 'noun|inverse noun'")
        pairs.append((noun, inverse or None))
    _no_duplicates([n for p in pairs for n in p if n], "task.natural.relations", where)
    if need_inverse:
        missing = [n for n, inv in pairs if inv is None]
        if missing:
            raise UserError(f"task.natural.relations: the reversal family needs an inverse for every relation, and {where} "
                            f"has none for {', '.join(repr(m) for m in missing[:5])}; write 'noun|inverse noun'")
    if not pairs:
        raise UserError(f"task.natural.relations: {where} has no relations; give one noun a line")
    return pairs
