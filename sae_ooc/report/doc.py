"""The report being written: its Markdown lines, the figures it shows and its headline numbers.

Every headline number goes through `Doc.number`, which records it for RUN/summary.json with the data it was
measured on and whether that data also chose it (in-sample), and returns it formatted for the text: the
Markdown and the JSON cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sae_ooc.io import read_json
from sae_ooc.records import OMIT
from sae_ooc.viz.text import fmt


def load(path: Path):
    return read_json(path) if Path(path).exists() else None


def pct(x) -> str:
    return "n/a" if x is None or x is OMIT else f"{100 * x:.1f}%"


f3 = fmt  # the report's short name

# The page's sections in order, by the name of their function less `_section` (report.report.SECTIONS runs them in
# this order): the lead sections have no number; the others are numbered 1, 2, ... in this order. A heading and a
# cross-reference ask for the number (`Doc.heading`, `Doc.ref`), so moving a section renumbers the page.
LEAD = ("finetune", "threehop", "causal_circuit", "bridge", "variables_control", "mechanism")  # finetune / threehop: only in a fine-tuning / three-hop run's report (its answer)
NUMBERED = ("task", "train", "sae", "attribution", "circuit", "variable", "analyses", "steer", "edit", "browse", "dynamics", "sweep", "family")
ORDER = LEAD + NUMBERED


@dataclass
class Doc:
    run: object
    lines: list[str] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)
    numbers: list[dict] = field(default_factory=list)

    def add(self, *lines: str) -> None:
        self.lines.extend(lines)

    def heading(self, section: str, title: str) -> None:
        """The heading of a section (a name in ORDER): `## 3. title` for a numbered one, `## title` for a lead one."""
        if section not in ORDER:
            raise KeyError(f"{section} is not a report section (sae_ooc.report.doc.ORDER)")
        self.add(f"## {NUMBERED.index(section) + 1}. {title}" if section in NUMBERED else f"## {title}", "")

    def subheading(self, section: str, i: int, title: str) -> None:
        self.add(f"### {NUMBERED.index(section) + 1}.{i} {title}", "")

    def ref(self, section: str) -> str:
        """`section 3`: how the text names a numbered section."""
        return f"section {NUMBERED.index(section) + 1}"

    def number(self, name: str, value, measured_on: str, in_sample: bool = False, spec: str = ".3f") -> str:
        """Record a headline number for summary.json and return its text (in-sample numbers say so)."""
        v = None if value is None or value is OMIT else (value if isinstance(value, (str, bool)) else float(value))
        self.numbers.append({"name": name, "value": v, "measured_on": measured_on, "in_sample": bool(in_sample)})
        text = v if isinstance(v, str) else f3(v, spec)
        return f"{text} (in-sample)" if in_sample else text

    def figure(self, *paths: Path) -> None:
        self.figures.extend(paths)

    def load_or_say(self, cls, directory: Path, command: str | None = None, not_run: str = "Not run yet"):
        """A section's typed input `cls.load_if(directory)`, or None after the section's one line saying what to run
        (`command`: the command's text, default `Doc.cmd` of the stage that writes it)."""
        x = cls.load_if(directory)
        if x is None:
            self.add(f"{not_run}: {command or self.cmd(cls.STAGE)}.", "")
        return x

    def cmd(self, stage: str, extra: str = "") -> str:
        run = self.run
        cfg = f" --config configs/{run.cfg.name}.yaml" if (Path("configs") / f"{run.cfg.name}.yaml").exists() else ""
        return f"`sae-ooc {stage}{cfg} --run {run.root}{extra}`"
