"""Typed stage outputs: a dataclass per output file, with save/load, a format version and generated documentation.

A stage output is a `StageOutput` dataclass defined in the package of the stage that writes it (for example
`sae_ooc.interventions.steer_result.SteerResult`). The stage builds it and calls `save(run_subdir)`; every reader
calls `Class.load(run_subdir)` and reads attributes, so a renamed field breaks a test, not a report page at run time.
Model: circuit-tracer's `Graph` (`to_pt` / `from_pt`).

The JSON is the dataclasses' fields in declaration order (the bytes the stages wrote before they were typed):
- a nested `Record` is a JSON object; `list[R]` and `dict[str, R]` of records are lists and objects of them;
- an optional key some files lack is `OMIT` (falsy, not written); `None` is JSON null;
- keys this version does not know are kept in `extra` and written back after the known ones;
- a key that is not a Python name ("valid_id_0.5_step") is a field declared with `key("valid_id_0.5_step")`;
- keys named by data ("bridge@r1", one per variable and position) beside fixed ones are collected by a `rest()` field,
  a dict written in its place;
- a record read from a file writes its keys back in the file's order (a few producers write a record's optional keys in
  an order that depends on the case: random references put `n_draws` before or after `switch`), so every file re-saves
  byte for byte; a record built in code writes them in declaration order;
- a record whose every key is optional and absent (`{}`, e.g. a row's `pairs` for the bridge itself) is falsy.

Format versions: version 1 of every output is its JSON as it was when the outputs became typed, which carries no
version key (files stay byte-identical). A later version writes `"format": "<FORMAT_NAME>/<n>"`; `load` refuses a
file whose format it does not know, naming the command that rebuilds it. An output that always carried its version in
a `format` field of its own (variables.json, standard_metrics.json) declares `FORMAT_FIELD = True`: the key stays where
the file has it, and `READS` lists the older versions it still loads (and saves back as they were). docs/FORMATS.md is generated from these
classes (`python -m sae_ooc.formats`; tests/test_records.py checks it is current): a field's meaning is the comment
beside it in the class, written once.
"""

from __future__ import annotations

import functools
import inspect
import re
import types
import typing
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, ClassVar

from sae_ooc.errors import UserError
from sae_ooc.io import read_json, write_json


class _Omit:
    """An optional key the file does not have: falsy, left out of the JSON."""

    def __repr__(self) -> str:
        return "OMIT"

    def __bool__(self) -> bool:
        return False

    def __eq__(self, other) -> bool:
        return isinstance(other, _Omit)

    def __hash__(self) -> int:
        return 0


OMIT: Any = _Omit()


def read_or_rerun(path: Path, rebuild: str):
    """A stage output's JSON, or one line naming the file and the command that rebuilds it (every typed output's
    `load` reads through here)."""
    try:
        return read_json(path)
    except (ValueError, OSError) as e:
        raise UserError(f"{path} is unreadable ({e}); rerun `{rebuild}`") from None


def given(x) -> bool:
    """Whether an optional field is in the file (not OMIT; None counts as given: it is written as null)."""
    return x is not OMIT


def opt(x, default=None):
    """An optional field's value, `default` where the file does not have it (OMIT)."""
    return default if x is OMIT else x


@functools.cache
def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


@dataclass(frozen=True)
class _Schema:
    fields: tuple  # (name, JSON key, type hint, is the rest field) of every field but `extra`, in field order
    required: tuple  # the JSON keys of the fields without a default
    keys: frozenset  # the JSON keys the fields other than the rest field name
    rest: tuple | None  # (name, type hint) of the rest field


@functools.cache
def _schema(cls) -> _Schema:
    """A record class's fields as `to_json` / `from_json` read them, worked out once per class: the suite loads ~50,000
    records, and `dataclasses.fields` with the key lookups per record was most of that time."""
    hints = _hints(cls)
    own = [f for f in fields(cls) if f.name != "extra"]
    rows = tuple((f.name, _key(f), hints[f.name], bool(f.metadata.get("rest"))) for f in own)
    return _Schema(rows, tuple(_key(f) for f in own if not _has_default(f)), frozenset(k for _, k, _, r in rows if not r),
                   next(((n, h) for n, _, h, r in rows if r), None))


def _record_type(hint) -> type | None:
    return hint if isinstance(hint, type) and issubclass(hint, Record) else None


def _load(hint, v):
    """A JSON value as `hint` says: records (and lists / dicts / unions of them) become their dataclasses."""
    if v is None or isinstance(v, Record):
        return v
    if (rt := _record_type(hint)) is not None:
        return rt.from_json(v) if isinstance(v, dict) else v
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        recs = [a for a in args if _record_type(a) or typing.get_origin(a) in (list, dict)]
        return _load(recs[0], v) if len(recs) == 1 else v
    if origin is list and args and isinstance(v, list):
        return [_load(args[0], x) for x in v]
    if origin is dict and len(args) == 2 and isinstance(v, dict):
        return {k: _load(args[1], x) for k, x in v.items()}
    return v


def _dump(v):
    if isinstance(v, Record):
        return v.to_json()
    if isinstance(v, list):
        return [_dump(x) for x in v]
    if isinstance(v, tuple):
        return [_dump(x) for x in v]
    if isinstance(v, dict):
        return {k: _dump(x) for k, x in v.items()}
    return v


@dataclass(kw_only=True)
class Record:
    """A JSON object with known keys (subclasses are `@dataclass(kw_only=True)`)."""

    extra: dict = field(default_factory=dict, repr=False)  # keys this version does not know, written back as read

    def __bool__(self) -> bool:
        """False only for a record whose keys are all optional and absent (see the module docstring)."""
        return bool(self.extra) or any((v := getattr(self, f.name)) is not OMIT and not (f.metadata.get("rest") and not v)
                                       for f in fields(self) if f.name != "extra")

    def to_json(self) -> dict:
        out = {}
        for name, k, _, is_rest in _schema(type(self)).fields:
            v = getattr(self, name)
            if v is OMIT:
                continue
            if is_rest:
                out.update(_dump(v))
            else:
                out[k] = _dump(v)
        out = {**out, **self.extra}
        order = self.__dict__.get("_key_order")
        if order:  # read from a file: its keys in the file's order (new ones after them)
            out = {**{k: out[k] for k in order if k in out}, **out}
        return out

    @classmethod
    def from_json(cls, d: dict):
        sch = _schema(cls)
        known = {name: _load(hint, d[k]) for name, k, hint, is_rest in sch.fields if not is_rest and k in d}
        missing = [k for k in sch.required if k not in d]  # (a rest field has a default)
        if missing:
            raise KeyError(f"{cls.__name__}: missing {', '.join(missing)}")
        unknown = {k: v for k, v in d.items() if k not in sch.keys}
        if sch.rest:  # every key no other field names belongs to the rest field
            known[sch.rest[0]] = _load(sch.rest[1], unknown)
            unknown = {}
        obj = cls(**known, extra=unknown)
        obj.__dict__["_key_order"] = tuple(d)  # not a field: equality and repr ignore it
        return obj


def key(name: str, default=MISSING):
    """A field whose JSON key is not a Python name."""
    return field(default=default, metadata={"key": name})


def rest():
    """The keys of a JSON object that no other field names, as one dict field (typed dict[str, X])."""
    return field(default_factory=dict, metadata={"rest": True})


def _key(f) -> str:
    return f.metadata.get("key", f.name)


def _has_default(f) -> bool:
    return f.default is not MISSING or f.default_factory is not MISSING


@dataclass(kw_only=True)
class StageOutput(Record):
    """One output file of a stage: `save(dir)` writes dir/FILE atomically, `load(dir)` reads it back."""

    FILE: ClassVar[str]  # the file name inside the stage's folder
    STAGE: ClassVar[str]  # the stage that writes it (the command that rebuilds it)
    FORMAT_NAME: ClassVar[str]  # e.g. "sae_ooc.steer"
    FORMAT_VERSION: ClassVar[int] = 1  # version 1 writes no "format" key (the files as they were before typing)
    FORMAT_FIELD: ClassVar[bool] = False  # the class declares `format: str` (the file's own version key, kept where it is)
    READS: ClassVar[tuple[int, ...]] = ()  # older versions load() still reads (FORMAT_FIELD outputs)

    @classmethod
    def format_string(cls, version: int | None = None) -> str:
        return f"{cls.FORMAT_NAME}/{cls.FORMAT_VERSION if version is None else version}"

    def save(self, directory: str | Path) -> Path:
        d = self.to_json()
        if self.FORMAT_VERSION > 1 and not self.FORMAT_FIELD:
            d = {"format": f"{self.FORMAT_NAME}/{self.FORMAT_VERSION}", **{k: v for k, v in d.items() if k != "format"}}
        return write_json(Path(directory) / self.FILE, d)

    @classmethod
    def rebuild(cls, directory: Path) -> str:
        """The command that writes the file again (the stage's folder is directly under the run directory)."""
        return f"sae-ooc {cls.STAGE} --force --run {directory.parent}"

    @classmethod
    def path(cls, directory: str | Path) -> Path:
        return Path(directory) / cls.FILE

    @classmethod
    def exists(cls, directory: str | Path) -> bool:
        return cls.path(directory).exists()

    @classmethod
    def load(cls, directory: str | Path):
        path = cls.path(directory)
        rebuild = cls.rebuild(Path(directory))
        d = read_or_rerun(path, rebuild)
        own = cls.FORMAT_FIELD
        found = d.get("format") if isinstance(d, dict) else None
        if own:
            readable = {cls.format_string(v) for v in (*cls.READS, cls.FORMAT_VERSION)}
        else:
            readable = {None if cls.FORMAT_VERSION == 1 else cls.format_string()}
        if not isinstance(d, dict) or found not in readable:
            raise UserError(f"{path} is not a {cls.format_string()} file (format "
                            f"{found or cls.FORMAT_NAME + ('/?' if own else '/1')!r}); rerun `{rebuild}`")
        try:
            return cls.from_json({k: v for k, v in d.items() if k != "format" or own})
        except (KeyError, TypeError) as e:
            raise UserError(f"{path} does not hold a {cls.__name__} ({e}); rerun `{rebuild}`") from None

    @classmethod
    def load_if(cls, directory: str | Path):
        """The output, or None where the stage has not written it."""
        return cls.load(directory) if cls.exists(directory) else None


# ---------------------------------------------------------------------------------------------------- shared leaves
@dataclass(kw_only=True)
class Share(Record):
    """A share of prompts with its 95% Wilson interval (sae_ooc.interventions.facts.share)."""

    share: float | None  # k / n (None when n is 0)
    ci95: list[float] | None  # [low, high]
    n: int  # prompts


@dataclass(kw_only=True)
class MeanCI(Record):
    """A mean with its 95% normal interval over prompts (sae_ooc.interventions.facts.mean_ci)."""

    mean: float | None  # None when n is 0
    ci95: list[float] | None  # [low, high]
    n: int


@dataclass(kw_only=True)
class Spread(Record):
    """A quantity over random draws: mean, sample sd and range."""

    mean: float
    sd: float
    min: float
    max: float


# ---------------------------------------------------------------------------------------------------- documentation
def _comments(cls) -> dict[str, str]:
    """{field: the comment beside it in the class body}."""
    try:
        src = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    out = {}
    for line in src.splitlines():
        m = re.match(r"^    (\w+): [^#]*#\s*(.*)$", line)
        if m:
            out[m.group(1)] = m.group(2).strip()
    return out


def _type_name(hint) -> str:
    if isinstance(hint, type):
        return hint.__name__
    return re.sub(r"\b[\w.]+\.(\w+)", r"\1", str(hint)).replace("typing.", "")


def _cell(text: str) -> str:
    return text.replace("|", "\\|")  # a Markdown table cell


def _nested(hint) -> list[type]:
    if _record_type(hint):
        return [hint]
    return [t for a in typing.get_args(hint) for t in _nested(a)]


def format_doc(cls, head: str | None = None) -> list[str]:
    """Markdown for one output class and the records nested in it (each described once); `head`: the heading of a
    record that is not a StageOutput (a file's row)."""
    lines, seen, todo = [], set(), [cls]
    while todo:
        c = todo.pop(0)
        if c in seen or c in (Share, MeanCI, Spread):
            continue
        seen.add(c)
        title = (head or f"### `{c.FILE}` ({c.STAGE}): `{c.__module__}.{c.__name__}`, format {c.FORMAT_NAME}/{c.FORMAT_VERSION}"
                 if c is cls else f"#### `{c.__name__}`")
        lines += [title, "", inspect.cleandoc(c.__doc__ or ""), "", "| key | type | meaning |", "|---|---|---|"]
        notes, hints = _comments(c), _hints(c)
        for f in fields(c):
            if f.name == "extra":
                continue
            opt = " (optional)" if f.default is OMIT else ""
            name = f"*other keys* (`{f.name}`)" if f.metadata.get("rest") else f"`{_key(f)}`"
            lines.append(f"| {name} | `{_cell(_type_name(hints[f.name]))}`{opt} | {_cell(notes.get(f.name, ''))} |")
            todo += _nested(hints[f.name])
        lines.append("")
    return lines


def leaves_doc() -> list[str]:
    out = ["## Shared records", ""]
    for c in (Share, MeanCI, Spread):
        notes, hints = _comments(c), _hints(c)
        out += [f"#### `{c.__name__}`", "", inspect.cleandoc(c.__doc__ or ""), "", "| key | type | meaning |", "|---|---|---|"]
        out += [f"| `{f.name}` | `{_cell(_type_name(hints[f.name]))}` | {_cell(notes.get(f.name, ''))} |" for f in fields(c) if f.name != "extra"]
        out.append("")
    return out


def is_record(x) -> bool:
    return is_dataclass(x) and isinstance(x, Record)
