"""The model with every SAE spliced in, error terms included, and interventions on its nodes.

A *node* is one SAE feature or one SAE error term at one (hook, position). The spliced model is
SAELens's `HookedSAETransformer` with each SAE attached with `use_error_term=True`, so it computes
exactly what the original model computes. Every intervention goes through the SAE hook points that
HookedSAETransformer exposes at `<hook>.hook_sae_input` (what the SAE reads), `.hook_sae_acts_post`
(feature activations), `.hook_sae_error` (error term) and `.hook_sae_output` (what flows on).

Node tensors are laid out per hook as [..., n_pos, d_sae + 1]: the last column is the error node.

Gradients. SAELens computes the error term under `no_grad`, so the gradient of a spliced layer is
that of its reconstruction only. Attribution needs the gradient of the *original* model, so in the
gradient modes here every node is a leaf and each spliced layer passes the gradient straight through
(`out + (x - x.detach())`: value unchanged, d out / d x = identity), as Marks et al. (2024) do.
In edge mode the straight-through path is left out, so a gradient reaches a node only along paths that
avoid every other SAE layer: the direct effect that an edge measures.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from sae_lens import HookedSAETransformer

from sae_ooc.errors import UserError
from sae_ooc.models.hooked import load_model
from sae_ooc.saes.store import hook_sort_key, load_saes
from sae_ooc.tasks.layout import TOY_LAYOUT, Layout, load_layout

Fn = Callable[[str, torch.Tensor], torch.Tensor | None]


def hooked_sae_transformer(model):
    """A HookedSAETransformer with `model`'s config and weights (parameters frozen)."""
    hst = HookedSAETransformer(model.cfg)
    hst.load_state_dict(model.state_dict())
    hst.eval()
    for p in hst.parameters():
        p.requires_grad_(False)
    return hst


def task_metric(logits: torch.Tensor, answer_pos: torch.Tensor, target: torch.Tensor, foil: torch.Tensor | None, kind: str) -> torch.Tensor:
    """Per-prompt metric at the answer position: logit_diff (target - foil), logprob (of target) or ce."""
    rows = torch.arange(logits.shape[0], device=logits.device)
    lg = logits[rows, answer_pos]
    if kind == "logit_diff":
        return lg[rows, target] - lg[rows, foil]
    lp = F.log_softmax(lg.float(), dim=-1)[rows, target]
    return lp if kind == "logprob" else -lp


@dataclass
class NodeValues:
    """Feature activations and error terms of every hook: {hook: [..., P, d_sae]} and {hook: [..., P, d_in]}
    (leading dims: a batch of prompts, or none for values shared by every prompt).

    One node's values go through `get` and `set` (a node is anything with hook, pos and idx, idx None for the
    error node), so no caller branches on feature vs error node."""

    acts: dict[str, torch.Tensor] = field(default_factory=dict)
    errs: dict[str, torch.Tensor] = field(default_factory=dict)
    err_dims: ClassVar[int] = 1  # trailing dims of an error node's value (its d_in vector)

    def rows(self, idx):
        """Rows `idx` of per-prompt values; values shared by every prompt (no leading dim) stay as they are."""
        return type(self)({h: a[idx] if a.dim() == 3 else a for h, a in self.acts.items()},
                          {h: e[idx] if e.dim() == 2 + self.err_dims else e for h, e in self.errs.items()})

    @classmethod
    def cat(cls, parts: list[NodeValues]):
        """Batches of values joined along the leading (prompt) dim."""
        hooks = list(parts[0].acts)
        return cls({h: torch.cat([v.acts[h] for v in parts]) for h in hooks}, {h: torch.cat([v.errs[h] for v in parts]) for h in hooks})

    def differs(self, other: NodeValues) -> NodeMask:
        """Which nodes take another value in `other` (broadcast: `other` may be shared by every prompt)."""
        return NodeMask({h: a != other.acts[h] for h, a in self.acts.items()}, {h: (e != other.errs[h]).any(-1) for h, e in self.errs.items()})

    def minus(self, other: NodeValues) -> NodeValues:
        """self - other hook by hook (`other` detached: corrupted minus clean leaves is a constant)."""
        return NodeValues({h: a - other.acts[h].detach() for h, a in self.acts.items()},
                          {h: e - other.errs[h].detach() for h, e in self.errs.items()})

    def grads(self) -> NodeValues:
        """The gradients accumulated on leaf values."""
        return NodeValues({h: a.grad for h, a in self.acts.items()}, {h: e.grad for h, e in self.errs.items()})

    def tensor(self, node) -> torch.Tensor | None:
        """The hook's whole tensor the node lives in (features or errors), None if there is none."""
        return (self.errs if node.idx is None else self.acts).get(node.hook)

    def _at(self, node, rows) -> tuple:
        lead = Ellipsis if rows is None else rows
        if node.idx is None:
            return (lead, node.pos) + (slice(None),) * self.err_dims
        return lead, node.pos, node.idx

    def get(self, node, rows=None) -> torch.Tensor:
        """The node's value in every row (or in `rows` of the leading dim): a feature's activation, an error's vector."""
        return self.tensor(node)[self._at(node, rows)]

    def set(self, node, value, rows=None) -> None:
        self.tensor(node)[self._at(node, rows)] = value


class NodeMask(NodeValues):
    """Boolean masks of nodes: {hook: [..., P, d_sae]} for features, {hook: [..., P]} for error nodes."""

    err_dims: ClassVar[int] = 0


class RowPatches:
    """Set single nodes of single batch rows: feature (row, pos, feature) := value, error (row, pos) := vector."""

    def __init__(self):
        self.feat: dict[str, list[tuple]] = {}  # hook -> [(rows, pos, idx, values)] tensors
        self.err: dict[str, list[tuple]] = {}  # hook -> [(rows, pos, vectors)]

    def add_feats(self, hook: str, rows, pos, idx, values) -> None:
        self.feat.setdefault(hook, []).append(tuple(torch.as_tensor(t) for t in (rows, pos, idx, values)))

    def add_errs(self, hook: str, rows, pos, vectors) -> None:
        self.err.setdefault(hook, []).append((torch.as_tensor(rows), torch.as_tensor(pos), torch.as_tensor(vectors)))

    def add_node(self, node, rows: torch.Tensor, values: torch.Tensor) -> None:
        """`node` := values[r] in batch row rows[r] (scalars for a feature, vectors for an error node)."""
        pos = torch.full((len(rows),), node.pos)
        if node.idx is None:
            self.add_errs(node.hook, rows, pos, values)
        else:
            self.add_feats(node.hook, rows, pos, torch.full((len(rows),), node.idx), values)

    def acts_fn(self) -> Fn:
        feat = {h: [torch.cat(c) for c in zip(*v)] for h, v in self.feat.items()}

        def fn(h, f):
            if h not in feat:
                return None
            rows, pos, idx, val = (t.to(f.device) for t in feat[h])
            f = f.clone()
            f[rows, pos, idx] = val.to(f.dtype)
            return f

        return fn

    def err_fn(self) -> Fn:
        err = {h: [torch.cat(c) for c in zip(*v)] for h, v in self.err.items()}

        def fn(h, e):
            if h not in err:
                return None
            rows, pos, val = (t.to(e.device) for t in err[h])
            e = e.clone()
            e[rows, pos] = val.to(e.dtype)
            return e

        return fn


def load_spliced(run) -> Spliced:
    """The run's trained model with its trained SAEs spliced in, on `run.device`."""
    return Spliced(load_model(run.model_dir, run.device), load_saes(run.saes_dir, run.device), load_layout(run.data_dir))


class Spliced:
    """`model` with `saes` ({hook_name: SAE}) spliced in with their error terms; node positions are the
    `layout`'s (`n_pos` of them, named `position_names`)."""

    def __init__(self, model, saes: dict, layout: Layout = TOY_LAYOUT):
        missing = [h for h in saes if h not in model.hook_dict]
        if missing:
            raise UserError(f"SAE hook(s) {', '.join(missing)} are not hook points of the model; retrain the SAEs on this model's hooks")
        self.base = model
        self.hooks = sorted(saes, key=hook_sort_key)
        self.saes = {h: saes[h] for h in self.hooks}
        self.model = hooked_sae_transformer(model)
        for h, sae in self.saes.items():
            sae.cfg.metadata.hook_name = h  # the directory name is authoritative
            sae.eval()
            for p in sae.parameters():
                p.requires_grad_(False)
            self.model.add_sae(sae, use_error_term=True)
        self.d_sae = {h: int(s.cfg.d_sae) for h, s in self.saes.items()}
        self.d_in = {h: int(s.cfg.d_in) for h, s in self.saes.items()}
        self.layout = layout
        self.n_pos = layout.node_len
        self.position_names = layout.node_names

    @property
    def device(self):
        return self.model.cfg.device

    # the one forward pass everything else is built from ------------------------------------------
    def run(self, tokens: torch.Tensor, acts_fn: Fn | None = None, err_fn: Fn | None = None, out_fn=None, in_fn: Fn | None = None,
            stop_after: str | None = None) -> torch.Tensor:
        """Logits, with optional rewrites of each hook's input, activations, error and output.

        Each function gets (hook_name, tensor) and returns a replacement, or None to leave it; `out_fn`
        gets (hook_name, output, sae_input). With `stop_after` (a hook `blocks.L....`), the pass ends after block L
        and returns its residual stream instead of logits: for callers that only read the hooks up to there.
        """
        inputs: dict[str, torch.Tensor] = {}
        hooks = []
        for h in self.hooks:
            hooks.append((f"{h}.hook_sae_input", _wrap_in(h, in_fn, inputs)))
            if acts_fn is not None:
                hooks.append((f"{h}.hook_sae_acts_post", _wrap(h, acts_fn)))
            if err_fn is not None:
                hooks.append((f"{h}.hook_sae_error", _wrap(h, err_fn)))
            if out_fn is not None:
                hooks.append((f"{h}.hook_sae_output", _wrap_out(h, out_fn, inputs)))
        stop = int(stop_after.split(".")[1]) + 1 if stop_after is not None and stop_after.startswith("blocks.") else None
        return self.model.run_with_hooks(tokens.to(self.device), return_type="logits", fwd_hooks=hooks, stop_at_layer=stop)

    @torch.no_grad()
    def cache(self, tokens: torch.Tensor) -> tuple[torch.Tensor, NodeValues]:
        """Logits and every node's value on `tokens`."""
        vals = NodeValues()

        def acts(h, f):
            vals.acts[h] = f.detach().clone()

        def errs(h, e):
            vals.errs[h] = e.detach().clone()

        logits = self.run(tokens, acts_fn=acts, err_fn=errs)
        return logits, vals

    def run_leaves(self, tokens: torch.Tensor, values: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None,
                   straight_through: bool | Callable[[str], bool] = True, live: bool = False):
        """Forward pass with every node a leaf tensor that requires grad.

        `values` {hook: (acts, errs)} overrides the leaf values at those hooks (their own inputs are then
        ignored). `straight_through` (for all hooks, or a predicate on the hook) lets the gradient pass
        through a spliced layer as in the original model. With `live`, also returns each hook's node
        values as functions of the upstream leaves (for edges).
        Returns (logits, leaves NodeValues, live NodeValues or None).
        """
        leaves, lives = NodeValues(), NodeValues()
        st = straight_through if callable(straight_through) else (lambda h, v=straight_through: v)
        values = values or {}

        def acts(h, f):
            if live:
                x = inputs_seen[h]
                lives.acts[h] = f
                lives.errs[h] = x - self.saes[h].decode(f)
            v = values[h][0] if h in values else f
            leaves.acts[h] = v.detach().clone().requires_grad_(True)
            return leaves.acts[h]

        def errs(h, e):
            v = values[h][1] if h in values else e
            leaves.errs[h] = v.detach().clone().requires_grad_(True)
            return leaves.errs[h]

        inputs_seen: dict[str, torch.Tensor] = {}

        def ins(h, x):
            inputs_seen[h] = x

        def out(h, o, x):
            if h in values or not st(h):
                return None
            return o + (x - x.detach())

        with torch.enable_grad():
            logits = self.run(tokens, acts_fn=acts, err_fn=errs, out_fn=out, in_fn=ins)
        return logits, leaves, (lives if live else None)

    def run_straight_through(self, tokens: torch.Tensor, values: dict[str, tuple[torch.Tensor, torch.Tensor]]):
        """Forward pass with the nodes of the hooks in `values` set to those leaves (requiring grad) and
        every other spliced layer passing the gradient straight through. Returns (logits, leaves)."""
        leaves = NodeValues()

        def acts(h, f):
            if h in values:
                leaves.acts[h] = values[h][0]
                return values[h][0]
            return None

        def errs(h, e):
            if h in values:
                leaves.errs[h] = values[h][1]
                return values[h][1]
            return None

        def out(h, o, x):
            return None if h in values else o.detach() + (x - x.detach())

        with torch.enable_grad():
            logits = self.run(tokens, acts_fn=acts, err_fn=errs, out_fn=out)
        return logits, leaves

    @torch.no_grad()
    def run_replaced(self, tokens: torch.Tensor, acts: dict[str, torch.Tensor] | None = None, errs: dict[str, torch.Tensor] | None = None,
                     keep_acts: dict[str, torch.Tensor] | None = None, keep_errs: dict[str, torch.Tensor] | None = None,
                     record: NodeValues | None = None) -> torch.Tensor:
        """Logits with node values replaced: where keep_* is False (or missing, when acts/errs name the
        hook) the node takes the value in acts/errs (broadcast over rows). `record` collects what each
        hook computed before replacement."""

        def replace(part: str, values: dict | None, keeps: dict | None, widen: tuple):
            values = values or {}

            def fn(h, t):
                if record is not None:
                    getattr(record, part)[h] = t.clone()
                if h not in values:
                    return None
                keep = keeps.get(h) if keeps else None  # error masks [.., P] widen over the error vector
                return values[h].expand_as(t).clone() if keep is None else torch.where(keep[(..., *widen)], t, values[h])

            return fn

        return self.run(tokens, acts_fn=replace("acts", acts, keep_acts, ()), err_fn=replace("errs", errs, keep_errs, (None,)))

    @torch.no_grad()
    def run_patched(self, tokens: torch.Tensor, patches: RowPatches) -> torch.Tensor:
        return self.run(tokens, acts_fn=patches.acts_fn(), err_fn=patches.err_fn())

    @property
    def decode_is_stateless(self) -> bool:
        """True when an SAE's decode depends on its input only through the features (no run-time input
        normalisation), so a node patch can be written as an added delta (see run_deltas)."""
        return all(s.cfg.normalize_activations in ("none", "expected_average_only_in") for s in self.saes.values())

    @torch.no_grad()
    def feature_deltas(self, hook: str, clean_rows: torch.Tensor, idx: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """decode(f with f[idx] := value) - decode(f) for each row of clean feature vectors [n, d_sae]."""
        sae = self.saes[hook]
        patched = clean_rows.clone()
        patched[torch.arange(len(idx), device=patched.device), idx.to(patched.device)] = values.to(patched.device, patched.dtype)
        return sae.decode(patched) - sae.decode(clean_rows)

    @torch.no_grad()
    def run_deltas(self, tokens: torch.Tensor, deltas: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """The original model with `vectors` added to the activation of `hook` at (rows, pos).

        Patching one node of the spliced model moves its layer's output by decode(f') - decode(f) (a
        feature) or err' - err (an error node) and leaves every other spliced layer the identity (their
        error terms absorb whatever they do not reconstruct), so this is the same intervention without
        running any SAE: {hook: (rows, pos, vectors)}."""

        def add(rows, pos, vec):
            def fn(x, hook=None):
                x = x.clone()
                x.index_put_((rows.to(x.device), pos.to(x.device)), vec.to(x.device, x.dtype), accumulate=True)
                return x

            return fn

        hooks = [(h, add(*d)) for h, d in deltas.items()]
        return self.base.run_with_hooks(tokens.to(self.device), return_type="logits", fwd_hooks=hooks)


def _wrap(h: str, fn: Fn):
    def hook(t, hook=None):
        r = fn(h, t)
        return t if r is None else r

    return hook


def _wrap_in(h: str, fn: Fn | None, inputs: dict):
    def hook(t, hook=None):
        inputs[h] = t
        if fn is not None:
            r = fn(h, t)
            return t if r is None else r
        return t

    return hook


def _wrap_out(h: str, fn, inputs: dict):
    def hook(t, hook=None):
        r = fn(h, t, inputs[h])
        return t if r is None else r

    return hook
