"""The toy task's data stage: the splits of `task.family` (sae_ooc/tasks/families.py) as a `DatasetDict`.

Token ids: entities e0..e{E-1} are ids 0..E-1, relations r0.. follow, then `<pad>` (the comparison family puts its
values and labels in the entity block). A prompt is a list of token names (`"e12 r3 r7"`). Atomic facts are `[h, r]`
and analysed (inferred) facts `[h, r1, r2]`; the answer is predicted at the last position, so right-padding to
length 3 never changes what the model sees.

Splits (families.py says how each family fills them): `train`; `valid_id` and `test_id`, two disjoint random parts
of the same held-out in-distribution pool, `task.valid_fraction` of it in valid_id: early stopping and every tuning
choice read valid_id, test_id is only reported; `test_ood_sys` (Wang et al. 2024's systematic OOD split: atomic
facts trained but used by no inferred training fact), `test_unanswerable` (a needed atomic fact is not in train)
and `atomic_test` (the atomic facts of train).

With `task.render: natural` the data stage renders these facts as English documents and questions over a real
tokenizer (sae_ooc/tasks/natural): same splits and planted variables, multi-token `input_ids`/`answer_ids`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from datasets import Dataset, DatasetDict, disable_progress_bars, load_from_disk

from sae_ooc.config import TaskConfig
from sae_ooc.sections.model import hub_id
from sae_ooc.errors import UserError, unreadable
from sae_ooc.io import write_json
from sae_ooc.tasks.data_info import DataInfo
from sae_ooc.tasks.layout import LAYOUT_FILE, TOY_LAYOUT, Layout
from sae_ooc.tasks.rows import FEATURES, _concat, _rows, _shuffled, columns, valid_test  # noqa: F401  (re-exported)
from sae_ooc.tasks.natural.generate import render_natural
from sae_ooc.tasks.natural.text_vocab import TOKENIZER_FILE
from sae_ooc.tasks.families import FAMILIES, SPLITS, layout_of  # noqa: F401  (re-exported)
from sae_ooc.tasks.vocab import POSITION_ROLES, SEQ_LEN, Vocab, read_vocab  # noqa: F401  (re-exported)


def generate(cfg: TaskConfig) -> tuple[DatasetDict, Vocab]:
    """The task of `cfg.family`: its splits as a DatasetDict and its vocabulary."""
    return FAMILIES.get(cfg.family)(cfg)


def save_task(ds: DatasetDict, vocab: Vocab, data_dir: Path, layout: Layout = TOY_LAYOUT, extra: dict | None = None) -> None:
    """Write the task atomically: the DatasetDict, vocab.json, layout.json and `extra` files ({name: write(path)})."""
    data_dir = Path(data_dir)
    tmp = data_dir.with_name(data_dir.name + ".tmp")
    if tmp.exists():
        import shutil

        shutil.rmtree(tmp)
    disable_progress_bars()  # three bars for a sub-second write is noise
    # one shard a split: datasets writes no data file for an empty split otherwise (then cannot load it back)
    ds.save_to_disk(str(tmp), num_shards={s: 1 for s in ds})
    write_json(tmp / "vocab.json", vocab.to_json())
    write_json(tmp / LAYOUT_FILE, layout.to_json())
    for name, write in (extra or {}).items():
        write(tmp / name)
    if data_dir.exists():
        import shutil

        shutil.rmtree(data_dir)
    tmp.rename(data_dir)


def load_task(data_dir: Path) -> tuple[DatasetDict, Vocab]:
    data_dir = Path(data_dir)
    if not (data_dir / "vocab.json").exists():
        raise UserError(f"no task data in {data_dir}; run `sae-ooc data --run {data_dir.parent}` first")
    rebuild = f"sae-ooc data --run {data_dir.parent} --force"
    try:
        vocab = read_vocab(data_dir)
    except (ValueError, KeyError, TypeError, OSError, AttributeError) as e:
        raise unreadable(data_dir / "vocab.json", e, rebuild) from None
    try:
        ds = load_from_disk(str(data_dir))
    except Exception as e:  # datasets raises many kinds on a damaged folder (arrow, JSON, missing files)
        raise unreadable(data_dir, e, rebuild) from None
    missing = [s for s in SPLITS if s not in ds]
    if missing:  # data written before a split existed (valid_id)
        raise UserError(f"task data in {data_dir} has no split {', '.join(missing)} (written by an older version); rerun `{rebuild}`")
    if "answer_ids" not in ds["train"].column_names:
        raise UserError(f"task data in {data_dir} has no answer_ids column (written by an older version); rerun `{rebuild}`")
    return ds, vocab


@dataclass
class SplitTensors:
    """A split as padded tensors: what the model sees and where the answer is read.

    `tokens` is the prompt followed by the answer's tokens but its last (teacher forcing), right-padded to the
    layout's seq_len; answer token j is predicted at position `answer_pos + j`."""

    tokens: torch.Tensor  # [n, seq_len], right-padded
    answer_pos: torch.Tensor  # [n] index of the last prompt token
    answer: torch.Tensor  # [n] the answer's first token
    bridge: torch.Tensor  # [n], -1 when there is none
    hop: torch.Tensor  # [n]
    answer_ids: torch.Tensor | None = None  # [n, answer_len] every answer token, -1 padded (None: one token, = answer)
    planted: dict | None = None  # {head, r1, r2, answer}: the planted variables, [n] each (None: the toy's = tokens)
    bridge2: torch.Tensor | None = None  # [n] the second bridge (threehop: t(bridge, r2)), -1 for none; None: no column

    def __len__(self) -> int:
        return int(self.answer.shape[0])

    @property
    def multi_token(self) -> bool:
        return self.answer_ids is not None and self.answer_ids.shape[1] > 1

    @property
    def targets(self) -> torch.Tensor:
        """What the training loss reads: [n] answer tokens, or [n, answer_len] for multi-token answers."""
        return self.answer_ids if self.multi_token else self.answer

    def variable(self, name: str) -> torch.Tensor:
        """Planted variable `name` (head, r1, r2, bridge, answer) per example, -1 where the example has none."""
        if name == "bridge":
            return self.bridge
        if name == "bridge2":
            return self.bridge2 if self.bridge2 is not None else torch.full_like(self.answer, -1)
        if self.planted is not None:
            return self.planted[name]
        lengths = self.answer_pos + 1  # the toy task: the variables are the prompt's tokens
        if name == "answer":
            return self.answer
        i = ("head", "r1", "r2", "r3").index(name)
        return torch.where(lengths > i, self.tokens[:, i], -1) if self.tokens.shape[1] > i else torch.full_like(self.answer, -1)

    def role_codes(self) -> torch.Tensor:
        """[n, seq_len] the layout position (role) of each token, -1 where a token has none: every toy position is
        its role; in a natural-language task only the tokens of analysed question prompts (`planted["question"]`)
        have roles, training documents' tokens do not."""
        n, L = self.tokens.shape
        pos = torch.arange(L)[None, :].expand(n, L)
        if self.planted is None:
            return pos
        return torch.where(self.planted["question"].bool()[:, None], pos, -1)

    def _map(self, f) -> "SplitTensors":
        return SplitTensors(*(None if t is None else f(t) for t in (self.tokens, self.answer_pos, self.answer, self.bridge, self.hop, self.answer_ids)),
                            None if self.planted is None else {k: f(v) for k, v in self.planted.items()},
                            None if self.bridge2 is None else f(self.bridge2))

    def to(self, device) -> "SplitTensors":
        return self._map(lambda t: t.to(device))

    def subset(self, idx: torch.Tensor) -> "SplitTensors":
        return self._map(lambda t: t[idx])


def first_tokens(vocab, entities: torch.Tensor) -> torch.Tensor:
    """The first token of each entity's name (-1 stays -1): what a one-position logit reads an entity by. The toy's
    entities are their tokens."""
    if vocab.layout.render == "toy":
        return entities
    first = {e: vocab.answer_token_ids(e)[0] for e in torch.unique(entities).tolist() if e >= 0}
    return torch.tensor([first.get(e, -1) for e in entities.tolist()], dtype=torch.long)


def split_tensors(ds: Dataset, vocab: Vocab) -> SplitTensors:
    """The split as tensors, `vocab.layout.seq_len` wide (every split of a task has the same width)."""
    n, pad_id, seq_len = len(ds), vocab.pad_id, vocab.layout.seq_len
    names = ("input_ids", "answer_ids", "head", "r1", "r2", "answer", "bridge", "hop", "bridge2")
    c = dict(zip(names, columns(ds, *names)))
    prompts, answers = c["input_ids"], c["answer_ids"]
    width = max((len(p) + len(a) - 1 for p, a in zip(prompts, answers)), default=1)
    if width > seq_len:
        raise UserError(f"an example of {width} tokens does not fit the task's seq_len {seq_len}; rerun `sae-ooc data --force`")
    a_len = max((len(a) for a in answers), default=1)
    rows = [p + a[:-1] for p, a in zip(prompts, answers)]
    tokens = torch.tensor([r + [pad_id] * (seq_len - len(r)) for r in rows], dtype=torch.long).reshape(n, seq_len)
    lengths = torch.tensor([len(p) for p in prompts], dtype=torch.long).reshape(n)
    answer_ids = torch.tensor([a + [-1] * (a_len - len(a)) for a in answers], dtype=torch.long).reshape(n, a_len)
    col = {k: torch.tensor(c[k], dtype=torch.long).reshape(n) for k in ("head", "r1", "r2", "answer")}
    if vocab.layout.render != "toy":  # which prompts are the analysed question about their planted variables
        two_hop = "r2" in vocab.layout.roles  # the analysed prompt: the two-hop question, else (reversal) the inverse one
        col["question"] = torch.tensor([(r2 >= 0) == two_hop and ids == vocab.question_ids(h, r1, r2 if two_hop else None)
                                        for ids, h, r1, r2 in zip(prompts, c["head"], c["r1"], c["r2"])], dtype=torch.long).reshape(n)
    return SplitTensors(
        tokens=tokens,
        answer_pos=lengths - 1,
        answer=answer_ids[:, 0].clone() if n else torch.zeros(0, dtype=torch.long),
        bridge=torch.tensor(c["bridge"], dtype=torch.long).reshape(n),
        hop=torch.tensor(c["hop"], dtype=torch.long).reshape(n),
        answer_ids=answer_ids if a_len > 1 else None,
        planted=None if vocab.layout.render == "toy" else col,
        bridge2=torch.tensor(c["bridge2"], dtype=torch.long).reshape(n) if "bridge2" in ds.column_names else None,
    )


def majority_rate(ds: Dataset) -> float:
    """Accuracy of always answering the most common answer of this split (the floor to beat)."""
    if len(ds) == 0:
        return 0.0
    counts = np.bincount(np.asarray(columns(ds, "answer")[0]))
    return float(counts.max() / counts.sum())


def run_data(run, force: bool = False) -> dict:
    """Stage `data`: generate the task into RUN/data (a DatasetDict + vocab.json + layout.json; natural: + tokenizer.json)."""
    if run.cfg.model.source == "run":  # a fine-tuning run: new facts for model.run's model, in its vocabulary
        from sae_ooc.tasks.finetune import FINETUNE_FILE, FinetuneMeta, finetune_task

        ds, vocab, meta = finetune_task(run.cfg, Path(run.cfg.model.run).expanduser(), load_task)
        extra = {FINETUNE_FILE: lambda path: FinetuneMeta.from_json(meta).save(path.parent)}
        if vocab.layout.render != "toy":  # model.run's tokenizer, which its vocabulary (and this run's) reads
            extra[TOKENIZER_FILE] = lambda path: vocab.tokenizer.save(str(path))
        save_task(ds, vocab, run.data_dir, vocab.layout, extra)
        return DataInfo(sizes={s: len(ds[s]) for s in ds}, majority_rate={s: majority_rate(ds[s]) for s in ds},
                        finetune={k: v for k, v in meta.items() if k != "new_facts"}).to_json()
    ds, vocab = generate(run.cfg.task)
    if run.cfg.task.render == "natural":
        ds, vocab, layout, tok = render_natural(run.cfg.task, ds, FEATURES, run.cfg.model.path or None,
                                               hub_id(run.cfg.model.name or "gpt2"))
        save_task(ds, vocab, run.data_dir, layout, {TOKENIZER_FILE: lambda path: tok.tokenizer.save(str(path))})
    else:
        save_task(ds, vocab, run.data_dir, layout_of(run.cfg.task.family))
    return DataInfo(sizes={s: len(ds[s]) for s in SPLITS}, majority_rate={s: majority_rate(ds[s]) for s in SPLITS}).to_json()
