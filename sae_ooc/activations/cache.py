"""Reading the on-disk activation cache written by `sae-ooc harvest`.

Layout (everything loads with `safetensors` alone):

    RUN/activations/manifest.json                      model hash, hooks, d_model, dtype, shards + sha256
    RUN/activations/tokens.safetensors                 one row per harvested token (see TOKEN_COLUMNS)
    RUN/activations/<hook_name>/shard_00000.safetensors  {"activations": [n_tokens, d_model]}

Row r of the token table is row r of the concatenated shards of every hook. Every shard is checked against
its sha256 the first time this process reads it, so a corrupted or truncated file is a one-line error
that names it instead of garbage activations.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from safetensors.torch import load as load_bytes

from sae_ooc.activations.manifest import MANIFEST, CacheManifest
from sae_ooc.errors import UserError
from sae_ooc.io import read_json
from sae_ooc.records import opt

PROGRESS = "progress.json"  # a harvest in progress: the shards finished so far
TOKENS_FILE = "tokens.safetensors"
FORMAT = "sae_ooc.activations/1"
ROLES = ("head", "r1", "r2")  # token role = position in the prompt
# Per-token metadata: which sequence and position a row comes from and the task's planted variables
# for that sequence (token ids; -1 where the sequence has none, e.g. bridge/r2 for atomic facts).
TOKEN_COLUMNS = ("seq", "split", "pos", "token", "role", "head", "r1", "r2", "bridge", "answer", "hop", "is_answer_pos")
# natural-language tasks add the id of each row's token prefix (their head/r1/r2 columns are planted variables, not
# the prompt's tokens); `role` is then the row's layout position in an analysed question, -1 elsewhere
PREFIX_COLUMN = "prefix"


def shard_name(i: int) -> str:
    return f"shard_{i:05d}.safetensors"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _from_manifest(key: str, cast) -> property:
    return property(lambda self: cast(getattr(self.manifest, key)), doc=f"manifest.json's {key!r}")


class ActivationCache:
    """Read access to a finished harvest. `expected_model_hash` refuses a cache made from another model."""

    def __init__(self, root: str | Path, expected_model_hash: str | None = None):
        self.root = Path(root)
        mpath = self.root / MANIFEST
        if not mpath.exists():
            if (self.root / PROGRESS).exists():
                raise UserError(f"the harvest into {self.root} was interrupted; rerun `sae-ooc harvest --run {self.root.parent}` to finish it")
            raise UserError(f"no activation cache in {self.root} ({MANIFEST} missing); run `sae-ooc harvest --run {self.root.parent}` first")
        try:
            d = read_json(mpath)
        except ValueError:
            raise UserError(f"{mpath} is not valid JSON; rerun `sae-ooc harvest --force --run {self.root.parent}` to rebuild the cache") from None
        found = d.get("format") if isinstance(d, dict) else None
        if found != FORMAT:
            raise UserError(f"{mpath} is not an sae_ooc activation cache (format {found!r}, expected {FORMAT!r})")
        try:
            self.manifest: CacheManifest = CacheManifest.from_json(d)
        except (KeyError, TypeError) as e:
            raise UserError(f"{mpath} is incomplete ({e}); rerun `sae-ooc harvest --force --run {self.root.parent}` to rebuild the cache") from None
        if expected_model_hash is not None and self.model_hash != expected_model_hash:
            raise UserError(
                f"activations in {self.root} were harvested from a different model (cache {self.model_hash[:12]}, "
                f"model {expected_model_hash[:12]}); rerun `sae-ooc harvest --force --run {self.root.parent}` to rebuild them"
            )
        self._verified: set[str] = set()
        self._tokens: dict[str, torch.Tensor] | None = None

    # facts from the manifest -----------------------------------------------------------------
    model_hash = _from_manifest("model_hash", str)
    hooks = _from_manifest("hooks", list)
    d_model = _from_manifest("d_model", int)
    n_tokens = _from_manifest("n_tokens", int)
    shard_tokens = _from_manifest("shard_tokens", int)

    @property
    def n_shards(self) -> int:
        return len(next(iter(self.manifest.shards.values()))) if self.manifest.shards else 0

    splits = _from_manifest("splits", list)

    def shard_bounds(self, i: int) -> tuple[int, int]:
        """Rows [start, end) of the token table that shard i holds (the same for every hook)."""
        start = i * self.shard_tokens
        return start, min(start + self.shard_tokens, self.n_tokens)

    def check_hook(self, hook_name: str) -> None:
        if hook_name not in self.manifest.shards:
            raise UserError(f"unknown hook '{hook_name}' for the activation cache {self.root}; valid hooks: {', '.join(self.hooks)}")

    def shard_path(self, hook_name: str, i: int) -> Path:
        return self.root / hook_name / self.manifest.shards[hook_name][i].file

    # reading ------------------------------------------------------------------------------------
    def _read_verified(self, path: Path, sha256: str) -> dict[str, torch.Tensor]:
        if not path.exists():
            raise UserError(f"activation file {path} is missing; rerun `sae-ooc harvest --force --run {self.root.parent}` to rebuild the cache")
        data = path.read_bytes()
        key = str(path)
        if key not in self._verified:
            if _sha256(data) != sha256:
                raise UserError(
                    f"activation file {path} is corrupted or truncated (sha256 does not match {MANIFEST}); "
                    f"rerun `sae-ooc harvest --force --run {self.root.parent}` to rebuild the cache"
                )
            self._verified.add(key)
        return load_bytes(data)

    def load_shard(self, hook_name: str, i: int) -> torch.Tensor:
        """Shard i of `hook_name`: [rows, d_model] in the cache's dtype."""
        self.check_hook(hook_name)
        entry = self.manifest.shards[hook_name][i]
        return self._read_verified(self.shard_path(hook_name, i), entry.sha256)["activations"]

    @property
    def roles(self) -> tuple[str, ...]:
        """The task's position names (its layout), as harvested."""
        return tuple(opt(self.manifest.roles, ROLES))

    def position_name(self, pos: int) -> str:
        """A token position's name: its role in the toy task (every prompt is laid out by role); `pos<p>` in a
        natural-language task, whose prompts of other kinds (training documents) put other tokens there."""
        return self.roles[pos] if PREFIX_COLUMN not in self.tokens() and pos < len(self.roles) else f"pos{pos}"

    def tokens(self) -> dict[str, torch.Tensor]:
        """The per-token metadata table: {column: [n_tokens] int tensor}, see TOKEN_COLUMNS."""
        if self._tokens is None:
            self._tokens = self._read_verified(self.root / TOKENS_FILE, self.manifest.tokens_sha256)
        return self._tokens

    def read(self, hook_name: str, rows: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Activations of `hook_name` at token-table rows `rows` (any order), loading only the shards needed."""
        rows = torch.as_tensor(rows, dtype=torch.long)
        out = torch.empty(len(rows), self.d_model, dtype=dtype)
        shard_of = rows // self.shard_tokens
        for i in torch.unique(shard_of).tolist():
            sel = (shard_of == i).nonzero().squeeze(1)
            start, _ = self.shard_bounds(i)
            out[sel] = self.load_shard(hook_name, i)[rows[sel] - start].to(dtype)
        return out

    def verify(self, hooks: list[str] | None = None) -> None:
        """Check the token table and the shards of `hooks` (default: all) against their checksums (raises a UserError
        naming the first bad file and `sae-ooc harvest --force`)."""
        self.tokens()
        for hook in self.hooks if hooks is None else hooks:
            self.check_hook(hook)
            for i in range(self.n_shards):
                self.load_shard(hook, i)


def open_cache(root: str | Path, expected_model_hash: str | None = None) -> ActivationCache:
    return ActivationCache(root, expected_model_hash)


def prefix_ids(tokens: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per row, the id of its (position, token prefix): the tokens up to and including its position.

    Under causal attention a token's activation is a function of exactly this prefix, so rows that share one are
    twins (bit-identical activations up to float noise). Ids are dense, 0.., in (position, tokens) order.
    """
    if PREFIX_COLUMN in tokens:
        return tokens[PREFIX_COLUMN].long()
    pos = tokens["pos"].long()
    cols = [pos] + [torch.where(pos >= i, tokens[role].long(), -1) for i, role in enumerate(ROLES)]
    return torch.unique(torch.stack(cols, 1), dim=0, return_inverse=True)[1]


def heldout_mask(tokens: dict[str, torch.Tensor], fraction: float, seed: int) -> torch.Tensor:
    """Rows held out of SAE training, by prefix: at each position a seeded `fraction` of the distinct prefixes
    (at least one and all but one where there are two or more), with every row that carries one: [n_tokens] bool.

    Holding out whole sequences instead leaves most held-out head and r1 tokens with a twin in training (their
    prefix recurs in other sequences); split this way, no held-out row has a twin on the other side.
    """
    pid = prefix_ids(tokens)
    n = int(pid.max()) + 1 if len(pid) else 0
    pos_of = torch.zeros(n, dtype=torch.long).scatter_(0, pid, tokens["pos"].long())
    held = torch.zeros(n, dtype=torch.bool)
    g = torch.Generator().manual_seed(seed)
    for p in torch.unique(pos_of).tolist():
        ids = (pos_of == p).nonzero().squeeze(1)
        k = min(max(int(round(fraction * len(ids))), 1), len(ids) - 1) if len(ids) >= 2 else 0
        held[ids[torch.randperm(len(ids), generator=g)[:k]]] = True
    return held[pid]


def distinct_rows(tokens: dict[str, torch.Tensor], mask: torch.Tensor, pid: torch.Tensor | None = None) -> torch.Tensor:
    """One row per distinct prefix among the rows in `mask` (its first), ascending: a repeated prompt counts once.
    `pid`: `prefix_ids(tokens)` when the caller has it."""
    rows = mask.nonzero().squeeze(1)
    if len(rows) == 0:
        return rows
    uniq, inv = torch.unique((prefix_ids(tokens) if pid is None else pid)[rows], return_inverse=True)
    first = torch.full((len(uniq),), len(rows), dtype=torch.long).scatter_reduce_(0, inv, torch.arange(len(rows)), "amin")
    return rows[first].sort().values


def prefix_tokens(tokens: dict[str, torch.Tensor], rows: torch.Tensor, pos: int) -> torch.Tensor:
    """[len(rows), pos + 1] the token prefixes of rows `rows`, all at position `pos`: the table is in (split, sequence,
    position) order, so a row's prefix is the `pos` rows before it and itself."""
    return tokens["token"][rows[:, None] - pos + torch.arange(pos + 1)].long()


def prefix_tuples(tokens: dict[str, torch.Tensor], rows: torch.Tensor) -> set[tuple[int, ...]]:
    """The token prefixes (as tuples of token ids) of cache rows `rows` (a row's prefix is the `pos` rows before it and
    itself: the table is in (split, sequence, position) order)."""
    pos = tokens["pos"][rows].tolist()
    token = tokens["token"].tolist()
    return {tuple(token[r - p : r + 1]) for r, p in zip(rows.tolist(), pos)}
