"""model.source: pretrained: tiny local GPT-2 / GPT-NeoX checkpoints fine-tuned through the train stage (`sae-ooc
finetune`), reloaded by load_model, resumed exactly, MLP-only freezing, and bad inputs as one-line errors (exit 2)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformer_lens import HookedTransformer, HookedTransformerConfig

from pretrained_fixtures import bpe_tokenizer, gpt2, neox, save_checkpoint
from sae_ooc.cli import main
from sae_ooc.config import load_config
from sae_ooc.errors import UserError
from sae_ooc.io import read_json, read_jsonl
from sae_ooc.models.hooked import load_model
from sae_ooc.models.pretrained import load_pretrained
from sae_ooc.models.source import check_tokenizer, random_model
from sae_ooc.pipeline import run_stage
from sae_ooc.rundir import RunDir
from sae_ooc.tasks.data import SPLITS, load_task

from conftest import TINY as TINY_TOY

# the tiny toy task (17 token ids, 3 positions) on a tiny checkpoint; a few steps of fine-tuning
FT = ["train.steps=12", "train.eval_every=6", "train.n_checkpoints=2", "train.lr=3e-3", "train.weight_decay=0.0"]


@pytest.fixture(scope="module", autouse=True)
def tiny_config(tmp_path_factory):
    """configs/tiny.yaml without its model section: a pretrained model's architecture is its checkpoint's."""
    global TINY
    cfg = yaml.safe_load(TINY_TOY.read_text())
    cfg.pop("model")
    TINY = tmp_path_factory.mktemp("config") / "tiny_ft.yaml"
    TINY.write_text(yaml.safe_dump(cfg))


def _pretrained(name: str, path) -> list[str]:
    return ["model.source=pretrained", f"model.name={name}", f"model.path={path}"]


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpts")
    return {"gpt2": save_checkpoint(root / "gpt2", gpt2()), "neox": save_checkpoint(root / "neox", neox())}


def _run(tmp_path, name, overrides) -> RunDir:
    run = RunDir(tmp_path / name, load_config(TINY, list(overrides)))
    run_stage(run, "data")
    return run


def _plain(model_dir) -> HookedTransformer:
    """The saved model as an outside user loads it: transformer_lens + safetensors only."""
    model = HookedTransformer(HookedTransformerConfig(**json.loads((model_dir / "config.json").read_text())))
    model.load_state_dict(load_file(str(model_dir / "model.safetensors")))
    return model.eval()


def _split_accuracy(model, split) -> float:
    with torch.no_grad():
        return sum(int(model(torch.tensor([ids]))[0, len(ids) - 1].argmax()) == a
                   for ids, a in zip(split["input_ids"], split["answer"])) / len(split)


@pytest.fixture(scope="module")
def finetuned(ckpts, tmp_path_factory):
    """gpt2, all weights, through `sae-ooc data` + `sae-ooc finetune`."""
    root = tmp_path_factory.mktemp("ft") / "gpt2"
    sets = [a for s in FT + _pretrained("gpt2", ckpts["gpt2"]) for a in ("--set", s)]
    assert main(["data", "--config", str(TINY), "--run", str(root), *sets]) == 0
    assert main(["finetune", "--config", str(TINY), "--run", str(root), *sets]) == 0
    return RunDir.open(root)


def test_finetune_reloads_with_load_model_and_reproduces_metrics(finetuned, ckpts):
    mdir = finetuned.model_dir
    kwargs = json.loads((mdir / "config.json").read_text())
    assert kwargs["original_architecture"] == "GPT2LMHeadModel" and kwargs["model_name"] == "gpt2"
    assert "tokenizer_name" not in kwargs  # the saved model does not need the checkpoint directory
    model, plain = load_model(mdir), _plain(mdir)
    ids = torch.randint(0, 17, (4, 3), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model(ids), plain(ids), atol=0, rtol=0)
    ds, _ = load_task(finetuned.data_dir)
    final = read_json(mdir / "final_metrics.json")
    for split in SPLITS:
        assert _split_accuracy(plain, ds[split]) == pytest.approx(final["accuracy"][split], abs=1e-12)
    info = finetuned.stage_record("train")["info"]
    assert info["source"] == "pretrained" and info["name"] == "gpt2" and info["trainable"] == "all"
    assert len(info["weights_sha256"]) == 64
    # fine-tuning moved every weight group and lowered the training loss
    start = load_pretrained(ckpts["gpt2"]).state_dict()
    end = load_file(str(mdir / "model.safetensors"))
    assert all(not torch.equal(start[k], end[k]) for k in ("embed.W_E", "blocks.0.attn.W_Q", "blocks.1.mlp.W_in", "unembed.W_U"))
    recs = read_jsonl(mdir / "metrics.jsonl")
    assert [r["step"] for r in recs] == [0, 6, 12]
    assert recs[-1]["train_loss"] < recs[0]["train_loss"]


@pytest.mark.parametrize("arch", ["gpt2", "neox"])
def test_step0_checkpoint_is_the_hugging_face_model(arch, ckpts, finetuned, tmp_path):
    """The pretrained model as saved by the train stage and rebuilt by load_model computes the Hugging Face logits:
    no config field (rotary_dim, parallel attention, positional embeddings, normalisation, ...) is lost."""
    if arch == "gpt2":
        run = finetuned
    else:
        run = _run(tmp_path, "neox", [*FT, "train.steps=1", "train.eval_every=1", *_pretrained("pythia-70m", ckpts["neox"])])
        run_stage(run, "train")
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(str(ckpts[arch]), dtype=torch.float32).eval()
    model = load_model(run.model_dir / "checkpoints" / "step_0")
    ids = torch.randint(0, 100, (3, 20), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(model(ids), hf(ids).logits, atol=1e-4, rtol=0)
    # the random-model control of eval-sae: the checkpoint's architecture, freshly initialised
    control = random_model(run, None, seed=10_000)
    assert control.cfg.d_model == model.cfg.d_model and control.cfg.rotary_dim == model.cfg.rotary_dim
    assert control.cfg.positional_embedding_type == model.cfg.positional_embedding_type
    assert not torch.equal(control.W_E, model.W_E)


def test_mlp_only_freezes_everything_else(ckpts, tmp_path):
    run = _run(tmp_path, "mlp", [*FT, "train.trainable=mlp", *_pretrained("pythia-70m", ckpts["neox"])])
    assert run_stage(run, "train").finished
    start = load_pretrained(ckpts["neox"]).state_dict()
    end = load_file(str(run.model_dir / "model.safetensors"))
    mlp = [k for k in end if ".mlp." in k]
    assert len(mlp) == 8 and set(end) == set(start)  # W_in, b_in, W_out, b_out per layer
    for k in end:
        if k in mlp:
            assert not torch.equal(start[k], end[k]), k
        else:
            assert torch.equal(start[k], end[k]), k  # bit-identical: no gradient, no AdamW state, no weight decay


def test_resume_is_bit_identical(ckpts, tmp_path):
    over = [*FT, "train.batch_size=8", *_pretrained("gpt2", ckpts["gpt2"])]
    full = _run(tmp_path, "full", over)
    run_stage(full, "train")
    part = _run(tmp_path, "part", over)
    r = run_stage(part, "train", stop_after_steps=7)  # killed after step 7: the last checkpoint is step 6 (latest)
    assert r.ran and not r.finished
    assert run_stage(part, "train").finished
    a, b = load_file(str(full.model_dir / "model.safetensors")), load_file(str(part.model_dir / "model.safetensors"))
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert [r["step"] for r in read_jsonl(part.model_dir / "metrics.jsonl")] == [0, 6, 12]


def test_tokenizer_of_a_natural_task_must_be_the_checkpoints(ckpts, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    check_tokenizer(data, ckpts["gpt2"])  # no tokenizer.json: the toy task, nothing to check
    shutil.copy(ckpts["gpt2"] / "tokenizer.json", data / "tokenizer.json")
    check_tokenizer(data, ckpts["gpt2"])  # the checkpoint's own
    bpe_tokenizer(["Entirely different sentences about cats and dogs."] * 3, vocab=60).save(str(data / "tokenizer.json"))
    with pytest.raises(UserError, match=r"is not the tokenizer of .*task.natural.tokenizer: pretrained.*sae-ooc data --force"):
        check_tokenizer(data, ckpts["gpt2"])
    (tmp_path / "no_tokenizer").mkdir()
    with pytest.raises(UserError, match="has no tokenizer files"):
        check_tokenizer(data, tmp_path / "no_tokenizer")


def _fails(capsys, root, *sets, command="finetune") -> str:
    args = [a for s in sets for a in ("--set", s)]
    assert main([command, "--config", str(TINY), "--run", str(root), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err
    assert not (root / "model").exists()  # nothing half-written
    return err


def test_bad_inputs_are_one_line_errors(ckpts, tmp_path, capsys):
    from transformers import LlamaConfig, LlamaForCausalLM

    LlamaForCausalLM(LlamaConfig(num_hidden_layers=1, hidden_size=16, num_attention_heads=2, num_key_value_heads=2,
                                 intermediate_size=32, vocab_size=100)).save_pretrained(tmp_path / "llama")
    save_checkpoint(tmp_path / "small_vocab", gpt2(vocab=10), tokenizer=False)
    save_checkpoint(tmp_path / "short", gpt2(positions=2), tokenizer=False)
    root = tmp_path / "bad"
    assert main(["data", "--config", str(TINY), "--run", str(root)]) == 0
    capsys.readouterr()
    assert "model.source is scratch" in _fails(capsys, root)
    assert "model.d_model" in _fails(capsys, root, *_pretrained("gpt2", ckpts["gpt2"]), "model.d_model=128")
    assert "huggingface-cli download gpt2 --local-dir models/gpt2" in _fails(capsys, root, "model.source=pretrained", "model.name=gpt2")
    assert "model.path" in _fails(capsys, root, f"model.path={ckpts['gpt2']}", command="train")
    missing = tmp_path / "nowhere"
    err = _fails(capsys, root, *_pretrained("pythia-70m", missing))
    assert "does not exist" in err and f"huggingface-cli download EleutherAI/pythia-70m --local-dir {missing}" in err
    err = _fails(capsys, root, *_pretrained("pythia-70m", ckpts["gpt2"]))
    assert "GPT2LMHeadModel" in err and "GPTNeoXForCausalLM" in err
    assert "LlamaForCausalLM" in _fails(capsys, root, *_pretrained("gpt2", tmp_path / "llama"))
    assert "17 token ids" in _fails(capsys, root, *_pretrained("gpt2", tmp_path / "small_vocab"))
    assert "context of 2" in _fails(capsys, root, *_pretrained("gpt2", tmp_path / "short"))


@pytest.mark.parametrize("name", ["finetune_gpt2", "finetune_pythia70m"])
def test_finetune_configs_load(name):
    from sae_ooc.config import TaskConfig

    if not hasattr(TaskConfig(), "natural"):
        pytest.skip("task.natural (the natural-language renderer) is not merged yet")
    cfg = load_config(TINY_TOY.parent / f"{name}.yaml")
    assert cfg.model.source == "pretrained" and cfg.task.natural.tokenizer == "pretrained"
    assert cfg.model.path == f"models/{cfg.model.name}" and cfg.name == name


def test_harvest_reads_the_finetuned_model(finetuned):
    """A later stage reads the fine-tuned model through load_model unchanged: the harvest caches its activations."""
    from sae_ooc.activations.cache import ActivationCache
    from sae_ooc.models.hooked import model_hash

    assert run_stage(finetuned, "harvest").finished
    cache = ActivationCache(finetuned.activations_dir, expected_model_hash=model_hash(finetuned.model_dir))
    cache.verify()
    hook = "blocks.1.hook_resid_pre"
    x = cache.read(hook, torch.arange(cache.n_tokens))
    assert x.shape == (cache.n_tokens, 32)  # the checkpoint's d_model, not the model section's default 64
    assert cache.n_tokens > 0 and x.abs().sum() > 0
