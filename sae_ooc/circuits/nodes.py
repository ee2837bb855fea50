"""Nodes of the spliced model and their ids.

A *node* is one SAE feature or one SAE error term at one (hook, position); `Node(hook, pos, idx)` with
idx None for the error node. Its id is `blocks.1.hook_resid_pre:2:17` (feature 17 at position 2) or
`...:2:err` (the error node). Edges into the model's output point to the metric node, id `SINK`.
Imports nothing heavy.
"""

from __future__ import annotations

from dataclasses import dataclass

ERROR = "err"  # the feature field of an error node's id
SINK = "metric"  # id of the metric node that edges into the output point to


def node_id(hook: str, pos: int, idx: int | None) -> str:
    """`blocks.1.hook_resid_pre:2:17` for feature 17 at position 2, `...:2:err` for the error node."""
    return f"{hook}:{pos}:{ERROR if idx is None else idx}"


def parse_node_id(nid: str) -> tuple[str, int, int | None]:
    hook, pos, idx = nid.rsplit(":", 2)
    return hook, int(pos), None if idx == ERROR else int(idx)


@dataclass(frozen=True)
class Node:
    hook: str
    pos: int
    idx: int | None  # None: the SAE error node

    @property
    def id(self) -> str:
        return node_id(self.hook, self.pos, self.idx)

    @property
    def is_error(self) -> bool:
        return self.idx is None

    @property
    def type(self) -> str:
        return "error" if self.idx is None else "feature"

    @classmethod
    def parse(cls, nid: str) -> Node:
        return cls(*parse_node_id(nid))


def node_or_sink(nid: str) -> Node | str:
    """The Node of an id, or SINK for the metric node."""
    return SINK if nid == SINK else Node.parse(nid)
