"""What the export stage draws (its options; the saved circuit keeps every node and edge). Imports nothing heavy,
so the CLI shows these defaults without importing torch."""

from __future__ import annotations

from dataclasses import dataclass

from sae_ooc.records import Record


@dataclass
class ExportOptions:
    max_nodes: int = 0  # draw at most this many nodes, largest |effect| first (0 = every circuit node)
    min_abs_effect: float = 0.0  # and only nodes with at least this |effect|
    edge_threshold: float = 0.05  # draw edges with |weight| >= this fraction of the largest |weight|
    max_edges: int = 150


@dataclass(kw_only=True)
class DrawnOptions(Record):
    """The export options a circuit was drawn with (ExportOptions, as written)."""

    max_nodes: int
    min_abs_effect: float
    edge_threshold: float
    max_edges: int


@dataclass(kw_only=True)
class Drawn(Record):
    """The `drawn` block of a circuit's full JSON (`*circuit_full.json`: the saved CircuitGraph plus this): what of the
    circuit the export options drew (sae_ooc.viz.circuit_files.export_circuit writes it; the browser reads it)."""

    options: DrawnOptions
    nodes: list[str]  # ids of the drawn nodes
    edges: list[list[str]]  # [source, target] of the drawn edges
    without_drawn_edges: list[str]  # drawn nodes no drawn edge touches (drawn all the same)
