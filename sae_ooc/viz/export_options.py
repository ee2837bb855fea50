"""What the export stage draws (its options; the saved circuit keeps every node and edge). Imports nothing heavy,
so the CLI shows these defaults without importing torch."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ExportOptions:
    max_nodes: int = 0  # draw at most this many nodes, largest |effect| first (0 = every circuit node)
    min_abs_effect: float = 0.0  # and only nodes with at least this |effect|
    edge_threshold: float = 0.05  # draw edges with |weight| >= this fraction of the largest |weight|
    max_edges: int = 150
