"""Numbers as text in tables, figure titles and the report: one format, and "n/a" for a number that was not measured."""

from __future__ import annotations

import math


def fmt(x, spec: str = ".3f") -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)
