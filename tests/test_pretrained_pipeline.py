"""The fine-tuned-model path end to end on tiny local checkpoints: a GPT-2 and a GPT-NeoX (Pythia) architecture
model with random weights and a byte-level BPE, saved as Hugging Face checkpoint directories, then the natural task
tokenized by the checkpoint's own tokenizer -> fine-tune a few steps -> harvest -> SAEs -> attribute -> circuit ->
query, every stage reading the fine-tuned model by TransformerLens hook names."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from sae_ooc.cli import main
from sae_ooc.config import load_config
from sae_ooc.rundir import RunDir
from sae_ooc.tasks.data import load_task

from conftest import NATURAL, NATURAL_SETTINGS, ROOT, TINY

SMALL_TASK = {"n_entities": 16, "n_relations": 4, "facts_per_entity": 2, "phi": 1.0}  # conftest.NATURAL_SETTINGS' task

STAGES = ["harvest", "train-sae", "eval-sae", "attribute", "circuit"]


def _config(root, overrides: dict) -> "Path":  # noqa: F821
    cfg = yaml.safe_load(TINY.read_text())
    cfg.pop("model")  # a pretrained model's architecture is its checkpoint's
    cfg["task"] = {**yaml.safe_load((ROOT / "configs" / "natural_tiny.yaml").read_text())["task"], **SMALL_TASK}
    cfg["train"].update(steps=20, eval_every=10, n_checkpoints=1)
    cfg["attribution"].update(only_correct=False, split="all", n_pairs=12)  # a few steps of fine-tuning answer few prompts right
    # budgets that only need to run the stages: the numbers of this path are checked elsewhere
    cfg["sae"].update(training_tokens=4096, hooks=["blocks.1.hook_resid_pre"])  # one SAE: the stages' paths are per hook
    cfg["sae_eval"].update(probe_steps=20, absorption=False)  # SAEBench's absorption: tests/test_standard_metrics.py, tests/test_sae.py
    cfg["circuit"].update(curve_sizes=[0, 5, 20], edge_check=4, edge_counts=[2], edge_extra_ablations=[], random_edge_sets=4,
                          prune_pairs=2)
    for key, value in overrides.items():
        section, _, name = key.partition(".")
        cfg.setdefault(section, {})
        if "." in name:
            sub, _, leaf = name.partition(".")
            cfg[section].setdefault(sub, {})[leaf] = value
        else:
            cfg[section][name] = value
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def task_tokenizer(tmp_path_factory):
    """The BPE the natural data stage trains on this task's corpus (conftest's natural settings; the data stage alone,
    not conftest's trained `natural_trained`), as the checkpoints' tokenizer."""
    from tokenizers import Tokenizer

    from sae_ooc.pipeline import run as run_pipeline

    run = RunDir(tmp_path_factory.mktemp("natural_data") / "run", load_config(NATURAL, list(NATURAL_SETTINGS)))
    run_pipeline(run, stages=["data"])
    return Tokenizer.from_file(str(run.data_dir / "tokenizer.json"))


def _checkpoint(directory, arch: str, tok) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel, GPTNeoXConfig, GPTNeoXForCausalLM, PreTrainedTokenizerFast

    V = tok.get_vocab_size()
    torch.manual_seed(0)
    if arch == "gpt2":
        hf = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=V, n_positions=32, bos_token_id=0, eos_token_id=0))
    else:
        hf = GPTNeoXForCausalLM(GPTNeoXConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=2, rotary_pct=0.25,
                                              intermediate_size=128, vocab_size=V, max_position_embeddings=32,
                                              bos_token_id=0, eos_token_id=0))
    hf.save_pretrained(directory)
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>").save_pretrained(directory)


@pytest.mark.parametrize("arch,name,trainable", [("gpt2", "gpt2", "all"), ("neox", "pythia-70m", "mlp")])
def test_the_whole_path_runs_on_a_local_checkpoint(arch, name, trainable, task_tokenizer, tmp_path, capsys, monkeypatch):
    ckpt = tmp_path / arch
    _checkpoint(ckpt, arch, task_tokenizer)
    config = _config(tmp_path, {"model.source": "pretrained", "model.name": name, "model.path": str(ckpt),
                                "task.natural.tokenizer": "pretrained", "train.trainable": trainable, "train.lr": 3e-3})
    root = tmp_path / "run"
    argv = ["--config", str(config), "--run", str(root)]
    assert main(["data", *argv]) == 0
    assert main(["finetune", *argv]) == 0
    # the stages past train-sae read the fine-tuned model by TransformerLens hook names alone: the NeoX checkpoint goes
    # through those where the architectures differ (the weight conversion, harvest, the SAEs on its hooks), GPT-2 through all
    for stage in STAGES if arch == "gpt2" else STAGES[:2]:
        assert main([stage, "--run", str(root)]) == 0, stage
    run = RunDir.open(root)
    ds, vocab = load_task(run.data_dir)
    assert vocab.tokenizer.get_vocab() == task_tokenizer.get_vocab()  # the checkpoint's tokenizer, read back
    cfg = json.loads((run.model_dir / "config.json").read_text())
    assert cfg["original_architecture"] == ("GPT2LMHeadModel" if arch == "gpt2" else "GPTNeoXForCausalLM")
    manifest = json.loads((run.activations_dir / "manifest.json").read_text())
    assert manifest["roles"] == list(vocab.layout.position_names) and manifest["d_model"] == 32
    if arch == "gpt2":
        circuit = json.loads((run.circuit_dir / "circuit.json").read_text())
        assert circuit["metadata"]["positions"] == list(vocab.layout.node_names) and circuit["nodes"]
    d = ds["test_id"]
    capsys.readouterr()
    assert main(["query", "--run", str(root), vocab.decode(d["input_ids"][0]), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["tokens"] == [vocab.name(i) for i in d["input_ids"][0]]
    assert {h["hook"] for h in res["per_hook"]} == {json.loads(p.read_text())["metadata"]["hook_name"]
                                                     for p in run.saes_dir.glob("*/cfg.json")}
