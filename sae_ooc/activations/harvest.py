"""Stage `harvest`: run a HookedTransformer over the task's splits and cache activations on disk.

For every configured hook and every non-pad position, the activation goes to
`RUN/activations/<hook_name>/shard_XXXXX.safetensors` (see sae_ooc.activations.cache for the layout). The harvest
streams: one batch of sequences is in memory at a time plus two shard buffers per hook (one filling, one
being written in the background), so peak memory does not grow with the number of tokens. Each shard group is written atomically and recorded in
`progress.json`; an interrupted harvest resumes after its last complete shard.
"""

from __future__ import annotations

import shutil
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import torch
from safetensors.torch import save as save_bytes
from tqdm.auto import tqdm

from sae_ooc.activations.cache import (
    FORMAT,
    MANIFEST,
    PROGRESS,
    ROLES,
    PREFIX_COLUMN,
    TOKEN_COLUMNS,
    TOKENS_FILE,
    _sha256,
    shard_name,
)
from sae_ooc.activations.manifest import CacheManifest
from sae_ooc.errors import UserError
from sae_ooc.io import _atomic, read_json, write_json
from sae_ooc.models.hooked import load_model, model_hash
from sae_ooc.tasks.data import SplitTensors, load_task, split_tensors
from sae_ooc.threads import torch_threads

# the `split` column's codes; new splits go at the end so an older cache's codes keep their meaning
SPLIT_CODE_ORDER = ("train", "test_id", "test_unanswerable", "atomic_test", "valid_id", "test_ood_sys")  # code 2 was test_ood, the same facts
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def default_hooks(n_layers: int) -> list[str]:
    """The residual stream before every block, and after the last one."""
    return [f"blocks.{layer}.hook_resid_pre" for layer in range(n_layers)] + [f"blocks.{n_layers - 1}.hook_resid_post"]


def resolve_hooks(model, hooks: list[str] | None) -> list[str]:
    hooks = list(hooks) if hooks else default_hooks(model.cfg.n_layers)
    bad = [h for h in hooks if h not in model.hook_dict]
    if bad:
        resid = [h for h in model.hook_dict if "resid" in h]
        raise UserError(f"unknown hook(s) {', '.join(bad)} in harvest.hooks; valid residual-stream hooks: {', '.join(resid)} (any name in model.hook_dict works)")
    return hooks


def token_table(splits: dict[str, SplitTensors], split_codes: dict[str, int], extra: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """One row per non-pad token, in harvest order (split, sequence, position); `extra`: planted variables beyond the
    two-hop question's (the layout's r3, bridge2: Layout.variables), a column each."""
    cols: dict[str, list[torch.Tensor]] = {c: [] for c in TOKEN_COLUMNS + tuple(extra)}
    for name, st in splits.items():
        n, L = st.tokens.shape
        mask = torch.arange(L)[None, :] <= st.answer_pos[:, None]
        seq = torch.arange(n)[:, None].expand(n, L)[mask]
        pos = torch.arange(L)[None, :].expand(n, L)[mask]
        per_seq = {v: st.variable(v) for v in ("head", "r1", "r2", "bridge", "answer", *extra)}
        per_seq["hop"] = st.hop
        cols["seq"].append(seq)
        cols["split"].append(torch.full_like(seq, split_codes[name]))
        cols["pos"].append(pos)
        cols["role"].append(st.role_codes()[mask])
        cols["token"].append(st.tokens[mask])
        cols["is_answer_pos"].append((pos == st.answer_pos[seq]).long())
        for k, v in per_seq.items():
            cols[k].append(v[seq])
    out = {k: torch.cat(v).to(torch.int32) if v else torch.zeros(0, dtype=torch.int32) for k, v in cols.items()}
    if any(st.planted is not None for st in splits.values()):  # a natural-language task: prefixes from the tokens
        out[PREFIX_COLUMN] = token_prefix_ids(splits)
    return out


def token_prefix_ids(splits: dict[str, SplitTensors]) -> torch.Tensor:
    """Per token-table row, a dense id of its (position, token prefix), in (position, tokens) order: what
    `prefix_ids` computes from the head/r1/r2 columns in the toy task, where they are the prompt's tokens."""
    keys = []
    for st in splits.values():
        L = st.tokens.shape[1]
        for row, last in zip(st.tokens.tolist(), st.answer_pos.tolist()):
            keys += [(p,) + tuple(row[: p + 1]) for p in range(min(last + 1, L))]
    order = {k: i for i, k in enumerate(sorted(set(keys)))}
    return torch.tensor([order[k] for k in keys], dtype=torch.int32)


def _write_safetensors(path: Path, tensors: dict[str, torch.Tensor]) -> str:
    """Write atomically; return the sha256 of exactly the bytes written."""
    data = save_bytes({k: v.contiguous() for k, v in tensors.items()})
    _atomic(path, lambda p: p.write_bytes(data))
    return _sha256(data)


class ShardWriter:
    """Buffers one hook's activations and writes a shard each time `shard_tokens` rows are filled.

    Two buffers of `shard_tokens` rows are allocated once and alternate: one fills while the other is
    serialised, hashed and written by `pool` (a background thread, so disk and sha256 overlap the next
    forward passes). That is the whole per-hook memory of a harvest, whatever the number of tokens.
    """

    def __init__(self, out_dir: Path, shard_tokens: int, d_model: int, dtype: torch.dtype, first_shard: int = 0,
                 pool: ThreadPoolExecutor | None = None):
        self.out_dir = out_dir
        self.buffers = [torch.empty(shard_tokens, d_model, dtype=dtype) for _ in range(2 if pool else 1)]
        self.writing: list[Future | None] = [None] * len(self.buffers)  # the write in flight from each buffer
        self.current = 0
        self.fill = 0
        self.next_shard = first_shard
        self.peak_fill = 0
        self.pool = pool
        self.pending: dict[str, tuple[dict, Future | str]] = {}  # shard file -> (entry, sha256 or its future), until recorded

    def add(self, acts: torch.Tensor) -> int:
        """Append rows; returns how many shards they completed."""
        done = 0
        while len(acts):
            take = min(len(acts), self.buffer.shape[0] - self.fill)
            self.buffer[self.fill : self.fill + take].copy_(acts[:take])  # casts to the cache dtype in the copy
            self.fill += take
            self.peak_fill = max(self.peak_fill, self.fill)
            acts = acts[take:]
            if self.fill == self.buffer.shape[0]:
                self.flush()
                done += 1
        return done

    def flush(self) -> None:
        name = shard_name(self.next_shard)
        entry = {"file": name, "n_tokens": self.fill}
        data = {"activations": self.buffer[: self.fill]}
        if self.pool is None:
            self.pending[name] = (entry, _write_safetensors(self.out_dir / name, data))
        else:
            fut = self.pool.submit(_write_safetensors, self.out_dir / name, data)
            self.pending[name] = (entry, fut)
            self.writing[self.current] = fut
            self.current = 1 - self.current
            if self.writing[self.current] is not None:
                self.writing[self.current].result()  # the buffer about to be refilled must be on disk first
        self.next_shard += 1
        self.fill = 0

    @property
    def buffer(self) -> torch.Tensor:
        return self.buffers[self.current]

    def is_written(self, name: str) -> bool:
        sha = self.pending[name][1]
        return not isinstance(sha, Future) or sha.done()

    def finished(self, name: str) -> dict:
        """The manifest entry of shard `name` once it is on disk (waits for its write)."""
        entry, sha = self.pending.pop(name)
        return {**entry, "sha256": sha.result() if isinstance(sha, Future) else sha}


def _settings(model_hash: str, hooks: list[str], d_model: int, dtype: str, shard_tokens: int, splits: dict[str, SplitTensors], n_tokens: int,
              roles: tuple[str, ...] = ROLES) -> dict:
    return {
        "format": FORMAT,
        "model_hash": model_hash,
        "hooks": hooks,
        "d_model": d_model,
        "dtype": dtype,
        "shard_tokens": shard_tokens,
        "splits": list(splits),
        "split_sizes": {k: len(v) for k, v in splits.items()},
        "n_tokens": n_tokens,
        "roles": list(roles),
        "token_columns": list(TOKEN_COLUMNS),
    }


def _resumable_shards(out_dir: Path, settings: dict) -> int:
    """How many leading shard groups of an interrupted harvest with the same settings are intact."""
    prog_path = out_dir / PROGRESS
    if not prog_path.exists():
        return 0
    try:
        prog = read_json(prog_path)
    except ValueError:
        return 0
    if any(prog.get(k) != v for k, v in settings.items()):
        return 0
    n_ok = min((len(v) for v in prog["shards"].values()), default=0)
    for hook, entries in prog["shards"].items():
        for i, e in enumerate(entries[:n_ok]):
            p = out_dir / hook / e["file"]
            if not p.exists() or _sha256(p.read_bytes()) != e["sha256"]:
                n_ok = i
                break
    return n_ok


def _existing_model_hash(out_dir: Path) -> str | None:
    for name in (MANIFEST, PROGRESS):
        p = out_dir / name
        if p.exists():
            try:
                return read_json(p).get("model_hash")
            except ValueError:
                return None
    return None


@torch.no_grad()
def harvest_activations(
    model,
    splits: dict[str, SplitTensors],
    out_dir: str | Path,
    model_hash: str,
    hooks: list[str] | None = None,
    shard_tokens: int = 16384,
    batch_size: int = 1024,
    dtype: str = "float32",
    force: bool = False,
    device: str = "cpu",
    stop_after_shards: int | None = None,
    events: list | None = None,
    roles: tuple[str, ...] = ROLES,
    extra: tuple[str, ...] = (),
) -> dict | None:
    """Harvest `hooks` of any HookedTransformer over `splits` into `out_dir`; returns the manifest.

    A finished cache with the same settings is left alone; one made from a different model is refused
    unless `force`. `stop_after_shards` stops (returning None, no manifest) once that many shard groups
    are on disk, as if the process had been killed there; `events` records ("forward", i) and
    ("shard", i) in order, for tests that check the harvest streams.
    """
    out_dir = Path(out_dir)
    hooks = resolve_hooks(model, hooks)
    split_codes = {name: i for i, name in enumerate(SPLIT_CODE_ORDER)}
    table = token_table(splits, split_codes, extra)
    n_tokens = len(table["seq"])
    settings = _settings(model_hash, hooks, model.cfg.d_model, dtype, shard_tokens, splits, n_tokens, roles)
    settings["token_columns"] += list(extra)
    settings["split_codes"] = {k: split_codes[k] for k in splits}

    old_hash = _existing_model_hash(out_dir)
    if old_hash is not None and old_hash != model_hash and not force:
        raise UserError(
            f"activations in {out_dir} were harvested from a different model (cache {old_hash[:12]}, model {model_hash[:12]}); "
            f"rerun with --force to rebuild them"
        )
    if not force and (out_dir / MANIFEST).exists():
        manifest = read_json(out_dir / MANIFEST)
        if all(manifest.get(k) == v for k, v in settings.items()):
            return manifest

    start_shard = 0 if force else _resumable_shards(out_dir, settings)
    if start_shard == 0 and out_dir.exists():
        shutil.rmtree(out_dir)  # another model, other settings or --force: nothing in it is reusable
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MANIFEST).unlink(missing_ok=True)
    prog = read_json(out_dir / PROGRESS) if start_shard else {**settings, "shards": {h: [] for h in hooks}}
    prog["shards"] = {h: prog["shards"][h][:start_shard] for h in hooks}
    write_json(out_dir / PROGRESS, prog)
    tokens_sha = _write_safetensors(out_dir / TOKENS_FILE, table)

    torch_dtype = DTYPES[dtype]
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shard-writer")
    writers = {h: ShardWriter(out_dir / h, shard_tokens, model.cfg.d_model, torch_dtype, first_shard=start_shard, pool=pool) for h in hooks}
    try:
        return _harvest_loop(model, splits, out_dir, hooks, writers, prog, settings, tokens_sha, skip_rows=start_shard * shard_tokens,
                             start_shard=start_shard, batch_size=batch_size, device=device, stop_after_shards=stop_after_shards,
                             events=events, n_tokens=n_tokens)
    finally:
        pool.shutdown(wait=True)


def _harvest_loop(model, splits, out_dir, hooks, writers, prog, settings, tokens_sha, skip_rows, start_shard, batch_size, device,
                  stop_after_shards, events, n_tokens) -> dict | None:
    for h in hooks:
        (out_dir / h).mkdir(exist_ok=True)
    # skip_rows: rows already on disk; the forward restarts at the sequence that holds the first missing one
    captured: dict[str, torch.Tensor] = {}

    def capture(act, hook):
        captured[hook.name] = act
        return act

    fwd_hooks = [(h, capture) for h in hooks]
    stop_at = _last_block_needed(hooks, model.cfg.n_layers)
    model.eval()
    row, batch_i, shards_done = 0, 0, start_shard
    pbar = tqdm(total=n_tokens, initial=min(skip_rows, n_tokens), desc="harvest", unit="tok")
    for name, st in splits.items():
        n, L = st.tokens.shape
        lengths = st.answer_pos + 1
        for s in range(0, n, batch_size):
            sl = slice(s, s + batch_size)
            n_rows = int(lengths[sl].sum())
            if row + n_rows <= skip_rows:
                row += n_rows
                continue
            tokens = st.tokens[sl].to(device)
            mask = torch.arange(L)[None, :] <= st.answer_pos[sl][:, None]
            flat = mask.flatten().nonzero().squeeze(1)[drop_rows(row, skip_rows):].to(device)  # non-pad rows in (seq, pos) order
            with model.hooks(fwd_hooks=fwd_hooks):
                model(tokens, return_type=None, stop_at_layer=stop_at)
            if events is not None:
                events.append(("forward", batch_i))
            batch_i += 1
            drop = drop_rows(row, skip_rows)
            completed = 0
            for h in hooks:
                act = captured[h]
                completed = writers[h].add(act.reshape(-1, act.shape[-1]).index_select(0, flat).cpu())
            captured.clear()
            row += n_rows
            pbar.update(n_rows - drop)
            shards_done = _record_shards(out_dir, prog, writers, shards_done, events, wait=bool(completed) and stop_after_shards is not None)
            if stop_after_shards is not None and shards_done >= stop_after_shards:
                pbar.close()
                return None
    if writers[hooks[0]].fill:
        for h in hooks:
            writers[h].flush()
    shards_done = _record_shards(out_dir, prog, writers, shards_done, events, wait=True)
    pbar.close()

    manifest = {**settings, "shards": prog["shards"], "tokens_file": TOKENS_FILE, "tokens_sha256": tokens_sha}
    CacheManifest.from_json(manifest).save(out_dir)
    (out_dir / PROGRESS).unlink(missing_ok=True)
    return manifest


def drop_rows(row: int, skip_rows: int) -> int:
    """Rows at the start of this batch that a resumed harvest already has on disk."""
    return max(skip_rows - row, 0)


def _last_block_needed(hooks: list[str], n_layers: int) -> int | None:
    """`stop_at_layer` for the forward pass: run only the blocks the hooks need (None = the whole model)."""
    layers = []
    for h in hooks:
        parts = h.split(".")
        if parts[0] == "blocks" and parts[1].isdigit():
            layers.append(int(parts[1]) + 1)
        elif h not in ("hook_embed", "hook_pos_embed"):
            return None
    last = max(layers, default=1)
    return None if last >= n_layers + 1 else last


def _record_shards(out_dir: Path, prog: dict, writers: dict[str, ShardWriter], i: int, events: list | None, wait: bool) -> int:
    """Record shard groups i, i+1, ... that are on disk for every hook (all of them if `wait`), so a restart
    resumes after them; returns the next unrecorded index."""
    while True:
        name = shard_name(i)
        if not all(name in w.pending for w in writers.values()):
            return i
        if not wait and not all(w.is_written(name) for w in writers.values()):
            return i
        for h, w in writers.items():
            prog["shards"][h].append(w.finished(name))
        write_json(out_dir / PROGRESS, prog)
        if events is not None:
            events.append(("shard", i))
        i += 1


def run_harvest(run, force: bool = False, stop_after_shards: int | None = None) -> dict | None:
    """Stage `harvest`: residual-stream activations of RUN/model over the task splits into RUN/activations.

    Resumes the shards of an interrupted harvest of the same model and settings unless `force`;
    `stop_after_shards` (tests of resuming) stops as if killed and returns None.
    """
    hc = run.cfg.harvest
    out_dir = run.activations_dir
    mhash = model_hash(run.model_dir)
    # the pipeline runs this stage only when its cache is stale: a finished cache (or one of an older model) is
    # rebuilt; only the shards of an interrupted harvest of this model are resumed
    force = force or (out_dir / MANIFEST).exists() or _existing_model_hash(out_dir) not in (None, mhash)
    ds, vocab = load_task(run.data_dir)
    splits = {s: split_tensors(ds[s], vocab) for s in hc.splits}
    model = load_model(run.model_dir, device=run.device)
    with torch_threads(hc.threads):
        manifest = harvest_activations(
            model, splits, out_dir, mhash, hooks=hc.hooks, shard_tokens=hc.shard_tokens,
            batch_size=hc.batch_size, dtype=hc.dtype, force=force, device=run.device, stop_after_shards=stop_after_shards,
            roles=vocab.layout.position_names,
            extra=tuple(v for v in vocab.layout.variables if v not in TOKEN_COLUMNS),
        )
    if manifest is None:
        return None
    return {"n_tokens": manifest["n_tokens"], "hooks": manifest["hooks"], "n_shards": len(next(iter(manifest["shards"].values())))}
