"""Where each role of the task's question prompt sits: the one prompt description every stage reads.

A task renders each example as prompt token ids (`input_ids`) followed by answer token ids (`answer_ids`); the
model reads `input_ids + answer_ids[:-1]` and predicts answer token j at position `answer_pos + j` (teacher
forcing), so a multi-token answer is scored by the summed log-probability of its tokens and counted correct
when every one of them is the greedy choice.

The analysed prompts (the questions the circuits, features and analyses are about: two-hop questions, or the
reversal family's inverse questions) are *aligned*: they all have the layout's length and the same role spans,
so a position index means the same role in every prompt. The toy task has one token per role (head, r1, r2);
the natural-language renderer chooses names and relation words of fixed token lengths to keep that true, and
the data stage checks it. Torch-free: `sae-ooc query` reads it before deciding whether it needs the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

LAYOUT_FILE = "layout.json"


@dataclass(frozen=True)
class Layout:
    """Where each role of an analysed prompt sits (RUN/data/layout.json, written by the data stage; no file: the toy's)."""

    render: str  # "toy" | "natural"
    position_names: tuple[str, ...]  # the role of each position of an analysed prompt (its last token is answer_pos)
    answer_pos: int  # the position that predicts the first answer token
    seq_len: int  # model context needed by every example: max over examples of len(input_ids) + len(answer_ids) - 1
    answer_len: int = 1  # the analysed prompts' answer length, in tokens
    roles: dict = field(default_factory=dict)  # role -> [start, end) token span in an analysed prompt
    question_hop: int = 2  # the `hop` of the analysed prompts' rows (the reversal family's questions: 1; threehop's: 3)

    @property
    def variables(self) -> tuple[str, ...]:
        """The planted variables of the analysed prompts: head, the relations, the bridges (hop - 1 of them: `bridge`,
        `bridge2`), the answer. The two-hop question's are head, r1, r2, bridge, answer; the three-hop one adds r3
        and bridge2 (extra variables: what the cache and the probes carry beyond the two-hop ones)."""
        rel = ("r3",) if "r3" in self.roles or "r3" in self.position_names else ()
        return ("head", "r1", "r2", *rel, "bridge", *(("bridge2",) if self.question_hop >= 3 else ()), "answer")

    @property
    def n_pos(self) -> int:
        """Positions of an analysed prompt (the node positions of features and circuits)."""
        return len(self.position_names)

    @property
    def node_len(self) -> int:
        """Positions the circuits see: an analysed prompt and its answer but the last token (teacher forcing)."""
        return self.n_pos + self.answer_len - 1

    @property
    def node_names(self) -> tuple[str, ...]:
        """The name of each of the `node_len` positions (the toy's: head, r1, r2)."""
        return self.position_names + tuple(f"answer.{j}" for j in range(1, self.answer_len))

    def positions(self, which: str = "roles") -> list[int]:
        """Positions of an analysed prompt to measure at: `roles`, the last token of each role span (the toy's every
        position); `all`, every token (a natural prompt's BOS, the non-last tokens of a name, template words)."""
        if which == "all" or not self.roles:
            return list(range(self.n_pos))
        return sorted({self.index(r) for r in self.roles})

    def role_at(self, pos: int, length: int) -> str:
        """The role of position `pos` in a prompt of `length` tokens: the layout's name in an analysed prompt (and in
        any toy prompt, whose atomic facts are its first positions), `pos<p>` in other prompts (training documents)."""
        if self.render == "toy" or length == self.n_pos:
            return self.position_names[pos] if pos < self.n_pos else f"pos{pos}"
        return f"pos{pos}"

    def index(self, role: str) -> int:
        """The position of `role`: the last token of its span (a position name, or a role of `roles`)."""
        if role in self.roles:
            return int(self.roles[role][1]) - 1
        return self.position_names.index(role)

    def span(self, role: str) -> range:
        """Every position of `role`'s span (one position for a single-token role)."""
        if role in self.roles:
            start, end = self.roles[role]
            return range(int(start), int(end))
        i = self.position_names.index(role)
        return range(i, i + 1)

    def to_json(self) -> dict:
        d = {"render": self.render, "position_names": list(self.position_names), "answer_pos": self.answer_pos,
             "seq_len": self.seq_len, "answer_len": self.answer_len, "roles": {k: list(v) for k, v in self.roles.items()}}
        # written only where it is not the two-hop question's: the layout.json of every other task stays byte for byte
        return d if self.question_hop == 2 else {**d, "question_hop": self.question_hop}

    @classmethod
    def from_json(cls, d: dict) -> "Layout":
        return cls(str(d["render"]), tuple(str(n) for n in d["position_names"]), int(d["answer_pos"]), int(d["seq_len"]),
                   int(d.get("answer_len", 1)), {str(k): [int(v[0]), int(v[1])] for k, v in d.get("roles", {}).items()},
                   int(d.get("question_hop", 2)))


# the toy task: one token per role, the answer read at r2 (two-hop) or r1 (atomic, right-padded)
TOY_LAYOUT = Layout("toy", ("head", "r1", "r2"), 2, 3, 1, {"head": [0, 1], "r1": [1, 2], "r2": [2, 3]})
# the threehop family's question (h, r1, r2, r3), read at r3; its atomic and two-hop training facts are right-padded
THREEHOP_LAYOUT = Layout("toy", ("head", "r1", "r2", "r3"), 3, 4, 1,
                         {"head": [0, 1], "r1": [1, 2], "r2": [2, 3], "r3": [3, 4]}, question_hop=3)
# the reversal family's question (b, r⁻¹) -> a, and its trained direction (a, r) -> b: one fact, read at r1 (seq_len
# stays the toy's 3, the model's context, so every toy family trains on the same tensors)
ONE_HOP_LAYOUT = Layout("toy", ("head", "r1"), 1, 3, 1, {"head": [0, 1], "r1": [1, 2]}, question_hop=1)


def load_layout(data_dir: Path) -> Layout:
    """The layout the data stage wrote; data written before layouts existed is the toy task's."""
    import json

    f = Path(data_dir) / LAYOUT_FILE
    if not f.exists():
        return TOY_LAYOUT
    try:
        return Layout.from_json(json.loads(f.read_text()))
    except (ValueError, KeyError, TypeError, IndexError) as e:
        from sae_ooc.errors import unreadable

        raise unreadable(f, e, f"sae-ooc data --run {Path(data_dir).parent} --force") from None
