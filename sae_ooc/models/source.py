"""Where the model the train stage starts from comes from (`model.source`), and which of its weights it trains.

- `scratch`: `models.hooked.build_model`, the toy HookedTransformer of the `model` section, seeded by train.seed.
- `pretrained`: the local Hugging Face checkpoint at `model.path` through `models.pretrained.load_pretrained`
  (TransformerLens's conversions, so every hook name is the same as the toy's), checked against the task: its
  architecture must be `model.name`'s, its context must hold the task's longest example, its vocabulary every
  token id of the task, and a natural-language task must have been tokenized by this checkpoint's tokenizer.

- `run`: the model of a finished sae_ooc run (`model.run`), to be fine-tuned on the new facts of `task.finetune`
  (`tasks/finetune.py` builds them from that run's data, in its vocabulary).

All return a HookedTransformer carrying `sae_ooc_config_kwargs`, so `save_model` writes a config.json from
which `load_model` (every later stage) rebuilds it without the checkpoint directory.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from sae_ooc.config import Config
from sae_ooc.sections.model import hub_id, pretrained_architecture
from sae_ooc.errors import UserError, unreadable
from sae_ooc.io import sha256_file
from sae_ooc.models.hooked import CONFIG_FILE, MODEL_FILE, build_model, load_model, with_new_tokens
from sae_ooc.models.pretrained import WEIGHT_FILES, checkpoint_architecture, hooked_config_dict, load_pretrained, load_tokenizer
from sae_ooc.tasks.layout import load_layout

TOKENIZER_FILE = "tokenizer.json"  # written by the natural-language renderer into RUN/data


def checkpoint_dir(cfg: Config) -> Path:
    """model.path as a directory; a relative path is relative to the working directory (like --run and --config)."""
    return Path(cfg.model.path).expanduser()


def initial_model(run, vocab, device: str = "cpu") -> HookedTransformer:
    """The model the train stage starts from: a new toy model, or the pretrained checkpoint checked against the task."""
    cfg = run.cfg
    if cfg.model.source == "scratch":
        return build_model(cfg.model, vocab, seed=cfg.train.seed, device=device)
    if cfg.model.source == "run":
        model = load_model(source_run(cfg) / "model", device=device)
        added = new_entity_tokens(run.data_dir)
        if added and model.cfg.d_vocab + added[1] == vocab.d_vocab:  # task.finetune.new_entities: the new entities' rows
            model = with_new_tokens(model, *added)
        # a pretrained checkpoint's vocabulary may be larger than its tokenizer's (natural render): it must hold every id
        if model.cfg.d_vocab < vocab.d_vocab or (vocab.layout.render == "toy" and model.cfg.d_vocab != vocab.d_vocab):
            raise UserError(f"the model of {source_run(cfg)} reads {model.cfg.d_vocab} token ids but this run's task has "
                            f"{vocab.d_vocab}; rerun `sae-ooc data --force --run {run.root}` (it rebuilds the task from model.run's)")
        return model
    path = checkpoint_dir(cfg)
    arch = checkpoint_architecture(path, hub_id(cfg.model.name))  # a missing directory, no weights, an unsupported architecture: one line each
    expected = pretrained_architecture(cfg.model.name)
    if arch != expected:
        raise UserError(f"{path} holds a {arch} checkpoint, but model.name {cfg.model.name} is a {expected}; point model.path "
                        f"at a {cfg.model.name} checkpoint or set model.name to the checkpoint's model")
    check_tokenizer(run.data_dir, path)
    shape = checkpoint_config(path, arch, cfg.model.name)  # checked before the (large) weights are read
    seq_len = load_layout(run.data_dir).seq_len
    if seq_len > shape["n_ctx"]:
        raise UserError(f"the task's longest example needs {seq_len} positions but {cfg.model.name} ({path}) has a context of "
                        f"{shape['n_ctx']}; shorten the task's templates or names and rerun `sae-ooc data --force --run {run.root}`")
    if vocab.d_vocab > shape["d_vocab"]:
        raise UserError(f"the task uses {vocab.d_vocab} token ids but {cfg.model.name} ({path}) has a vocabulary of "
                        f"{shape['d_vocab']}; use a smaller task or a model with a larger vocabulary")
    return load_pretrained(path, device=device, name=cfg.model.name)


def new_entity_tokens(data_dir: Path) -> tuple[int, int] | None:
    """(the first new id, how many) of the entity tokens a fine-tuning run's data added (RUN/data/finetune.json, written
    by tasks/finetune.py with task.finetune.new_entities), or None."""
    from sae_ooc.records import opt
    from sae_ooc.tasks.finetune_result import FinetuneMeta

    meta = FinetuneMeta.load_if(data_dir)
    k = opt(meta.new_entities_added, 0) if meta else 0
    return (int(meta.old_n_entities), int(k)) if k else None


def source_run(cfg: Config) -> Path:
    """model.run as a directory (relative to the working directory, like --run)."""
    return Path(cfg.model.run).expanduser()


def checkpoint_config(path: Path, arch: str, name: str) -> dict:
    """The HookedTransformerConfig fields of the checkpoint at `path`, from its config.json alone."""
    from transformers import AutoConfig

    try:
        hf_config = AutoConfig.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as e:
        raise UserError(f"{path / 'config.json'} is not a readable Hugging Face config ({type(e).__name__}); download the "
                        f"checkpoint again") from None
    return hooked_config_dict(hf_config, arch, name)


def check_tokenizer(data_dir: Path, path: Path) -> None:
    """A natural-language task (RUN/data/tokenizer.json) must use the checkpoint's tokenizer: the model reads its ids."""
    data_tok = Path(data_dir) / TOKENIZER_FILE
    if not data_tok.is_file():
        return  # the toy task: its token ids are its own symbols, read through the checkpoint's first embedding rows
    from tokenizers import Tokenizer

    rerun = f"sae-ooc data --force --run {Path(data_dir).parent}"
    try:
        ours = Tokenizer.from_file(str(data_tok)).get_vocab(with_added_tokens=True)
    except Exception as e:  # tokenizers raises a bare Exception on a malformed file
        raise unreadable(data_tok, e, rerun) from None
    theirs_tok = load_tokenizer(path)
    if theirs_tok is None:
        raise UserError(f"{path} has no tokenizer files (tokenizer.json, or vocab.json + merges.txt), so {data_tok} cannot be "
                        f"checked against it; download the checkpoint's tokenizer into {path} and rerun `{rerun}`")
    theirs = theirs_tok.get_vocab()
    if ours != theirs:
        differ = len(set(ours.items()) ^ set(theirs.items()))
        raise UserError(f"{data_tok} is not the tokenizer of {path} ({len(ours)} vs {len(theirs)} tokens, {differ} entries "
                        f"differ); set task.natural.tokenizer: pretrained and rerun `{rerun}`")


def source_info(run) -> dict:
    """What the train stage records of a pretrained source in RUN/stages.json (nothing for scratch: the toy's record is unchanged)."""
    cfg = run.cfg
    if cfg.model.source == "scratch":
        return {}
    if cfg.model.source == "run":
        model_dir = source_run(cfg) / "model"
        return {"source": "run", "run": str(source_run(cfg).resolve()), "trainable": cfg.train.trainable,
                "weights_sha256": sha256_file(model_dir / MODEL_FILE)}
    path = checkpoint_dir(cfg)
    weights = next((path / f for f in WEIGHT_FILES if (path / f).is_file()), None)
    return {"source": "pretrained", "name": cfg.model.name, "path": str(path.resolve()), "trainable": cfg.train.trainable,
            "weights_sha256": sha256_file(weights) if weights is not None else None}


def random_model(run, vocab, seed: int, device: str = "cpu") -> HookedTransformer:
    """An untrained model of the run's architecture (a control): the toy's build_model, or for a pretrained source a
    fresh TransformerLens initialisation of the checkpoint's architecture as the train stage saved it."""
    if run.cfg.model.source == "scratch":
        return build_model(run.cfg.model, vocab, seed=seed, device=device)
    config = run.model_dir / CONFIG_FILE
    try:
        kwargs = json.loads(config.read_text())
    except (OSError, ValueError) as e:
        raise unreadable(config, e, f"sae-ooc train --force --run {run.root}") from None
    torch.manual_seed(seed)
    return HookedTransformer(HookedTransformerConfig(**dict(kwargs, init_weights=True, seed=seed, device=device)))


def trainable_parameters(model, trainable: str) -> list[torch.nn.Parameter]:
    """Set requires_grad by `train.trainable` and return the parameters the optimizer gets, in model.parameters() order.

    "all": every parameter (the list AdamW(model.parameters()) would see). "mlp": only the MLP weights and biases
    (blocks.L.mlp.*); embeddings, attention, layer norms and the unembedding are frozen and get no AdamW state, so
    weight decay cannot move them either.
    """
    keep = {id(p) for name, p in model.named_parameters() if trainable == "all" or ".mlp." in f".{name}"}
    params = []
    for p in model.parameters():
        p.requires_grad_(id(p) in keep)
        if id(p) in keep:
            params.append(p)
    return params
