"""What `sae-ooc query` answers, as a typed object (sae_ooc/records.py): built by `sae_ooc.query.session.query` (live) and
`sae_ooc.query.index.lookup` (from the prompt index, compact view only), read by the text views
(sae_ooc.query.view), printed by `--json` and returned by `sae-ooc serve`'s /api/query as `to_json()`: the JSON is the
edge, the object what the code reads. No torch here."""

from __future__ import annotations

from dataclasses import dataclass

from sae_ooc.records import OMIT, Record


@dataclass(kw_only=True)
class ModelRank(Record):
    prob: float  # the model's probability of the token at the last position
    rank: int  # 1 = its top answer


@dataclass(kw_only=True)
class Truth(Record):
    """The prompt's answer and bridge when it is a fact of the task."""

    split: str
    answer: str
    answer_model: ModelRank
    bridge: str | None  # None for an atomic fact
    bridge_model: ModelRank | None


@dataclass(kw_only=True)
class AnswerProb(Record):
    token: str
    prob: float


@dataclass(kw_only=True)
class TopActivation(Record):
    """A task prompt the feature fires on most."""

    prompt: str
    position: int
    role: str
    token: str
    activation: float


@dataclass(kw_only=True)
class Promoted(Record):
    """An answer the feature's decoder promotes through the unembedding."""

    token: str
    score: float


@dataclass(kw_only=True)
class FeatureItem(Record):
    """One SAE feature at one (hook, position) of the prompt."""

    hook: str
    feature: int
    position: int
    role: str
    activation: float
    attribution: float  # activation x d logit(target) / d activation
    token: str = OMIT  # the prompt's token at the position (per-hook lists)
    label: str | None = OMIT  # eval-sae's label
    description: str | None = OMIT
    top_activations: list[TopActivation] = OMIT  # live queries only
    promoted: list[Promoted] = OMIT  # live queries only
    page: str | None = OMIT  # its page in RUN/browse/, when written


@dataclass(kw_only=True)
class HookSummary(Record):
    """Per hook: the features that move the target's logit most, over every position."""

    hook: str
    feature_attribution: float  # of all its features
    error_attribution: float  # of its SAE error
    features: list[FeatureItem]


@dataclass(kw_only=True)
class PositionRow(Record):
    """Per hook and position (--full): the top features by activation and by attribution."""

    hook: str
    position: int
    role: str
    token: str
    n_active: int
    by_activation: list[FeatureItem]
    by_attribution: list[FeatureItem]
    error_attribution: float
    error_norm: float


@dataclass(kw_only=True)
class QueryResult(Record):
    """What the spliced model does on one prompt."""

    prompt: str
    tokens: list[str]
    roles: list[str]  # pos:<role> per token
    truth: Truth | None  # None: not a fact of the task
    target: str  # the answer attributed to
    target_source: str  # --target, or the model's top answer
    target_prob: float
    attribution: str  # what attribution means here
    answers: list[AnswerProb]  # the model's top answers
    per_hook: list[HookSummary]
    hooks: list[PositionRow] = OMIT  # live queries: every (hook, position)
    from_index: bool = OMIT  # answered from the prompt index (no torch)
