"""RUN/summary.json as a typed object: every headline number of the report with what it was measured on and whether
that data also chose it (`Doc.number` records them; `sae-ooc compare` reads them). The file is a JSON list of numbers,
not an object, so this output keeps its own save/load beside the StageOutput ones (same checks, same one-line errors)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sae_ooc.errors import UserError
from sae_ooc.io import read_json, write_json
from sae_ooc.records import Record

SUMMARY_FILE = "summary.json"


@dataclass(kw_only=True)
class HeadlineNumber(Record):
    """One headline number of the report."""

    name: str  # dotted, e.g. control.bridge.r1.<hook>.das_rank16.switch
    value: float | str | bool | None
    measured_on: str  # the data it was measured on
    in_sample: bool  # whether that data also chose it


@dataclass
class ReportSummary:
    """RUN/summary.json (stage `report`): the report's headline numbers, in the report's order."""

    FILE = SUMMARY_FILE
    STAGE = "report"

    numbers: list[HeadlineNumber]

    def to_json(self) -> list[dict]:
        return [n.to_json() for n in self.numbers]

    def save(self, directory: str | Path, only_if_changed: bool = False) -> Path:
        return write_json(Path(directory) / self.FILE, self.to_json(), only_if_changed=only_if_changed)

    @classmethod
    def load(cls, directory: str | Path, rebuild: str | None = None) -> ReportSummary:
        path = Path(directory) / cls.FILE
        rebuild = rebuild or f"sae-ooc report --run {directory}"
        try:
            rows = read_json(path)
            if not isinstance(rows, list):
                raise ValueError("not a list of {name, value} rows")
            return cls([HeadlineNumber.from_json(r) for r in rows])
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise UserError(f"{path} is corrupt or not a summary ({type(e).__name__}); rebuild it with `{rebuild}`") from None

    def by_name(self) -> dict[str, HeadlineNumber]:
        return {n.name: n for n in self.numbers}
