"""Where the SAEs and their evaluation live, and how to load the SAEs.

    RUN/saes/<hook_name>/          stage train-sae: cfg.json + sae_weights.safetensors in SAELens's own (inference)
                                   format, so `sae_lens.SAE.load_from_disk(dir)` gives the SAE back with no sae_ooc
                                   code; metrics.json (training-time reconstruction metrics), train_log.jsonl, curves
    RUN/saes/heldout_rows.safetensors  the cache rows held out of SAE training: every row of the prefixes held out
                                   at each position (sae_ooc.activations.cache.heldout_mask), what eval-sae evaluates on
    RUN/sae_eval/<hook_name>/metrics.json  stage eval-sae: reconstruction, spliced-in task metrics, alignment,
                                   feature labels; RUN/sae_eval/summary.md and alignment_<variable>.png/.svg
"""

from __future__ import annotations

import json
from pathlib import Path

from sae_ooc.errors import UserError, unreadable
from sae_ooc.hooks import hook_sort_key

SAE_CFG_FILE = "cfg.json"  # sae_lens.constants.SAE_CFG_FILENAME
SAE_WEIGHTS_FILE = "sae_weights.safetensors"  # sae_lens.constants.SAE_WEIGHTS_FILENAME
METRICS_FILE = "metrics.json"
HELDOUT_FILE = "heldout_rows.safetensors"
SUMMARY_FILE = "summary.md"


def sae_dir(saes_root: str | Path, hook_name: str) -> Path:
    """The directory of the SAE trained on `hook_name`: RUN/saes/<hook_name>/."""
    return Path(saes_root) / hook_name


def eval_metrics_path(sae_eval_dir: str | Path, hook_name: str) -> Path:
    """eval-sae's metrics of the SAE on `hook_name`: RUN/sae_eval/<hook_name>/metrics.json."""
    return Path(sae_eval_dir) / hook_name / METRICS_FILE


def eval_rows(saes_root: str | Path) -> Path:
    """The file of cache rows held out of SAE training: RUN/saes/heldout_rows.safetensors."""
    return Path(saes_root) / HELDOUT_FILE


def saved_hooks(saes_root: str | Path) -> list[str]:
    """Hook names with a complete saved SAE under `saes_root`, in layer order."""
    root = Path(saes_root)
    if not root.is_dir():
        return []
    hooks = [p.name for p in root.iterdir() if (p / SAE_CFG_FILE).exists() and (p / SAE_WEIGHTS_FILE).exists()]
    return sorted(hooks, key=hook_sort_key)


def load_saes(saes_root: str | Path, device: str = "cpu", hook_names: list[str] | None = None) -> dict:
    """{hook_name: sae_lens.SAE} for every SAE saved under `saes_root` (or just `hook_names`)."""
    available = saved_hooks(saes_root)
    if not available:
        raise UserError(f"no trained SAEs in {saes_root}; run `sae-ooc train-sae --run {Path(saes_root).parent}` first")
    wanted = list(hook_names) if hook_names is not None else available
    missing = [h for h in wanted if h not in available]
    if missing:
        raise UserError(f"no trained SAE for hook(s) {', '.join(missing)} in {saes_root}; available: {', '.join(available)}")
    return {h: load_sae(sae_dir(saes_root, h), device, f"sae-ooc train-sae --run {Path(saes_root).parent} --force") for h in wanted}


def load_sae(path: str | Path, device: str = "cpu", rebuild: str = "sae-ooc train-sae --force"):
    """`sae_lens.SAE.load_from_disk(path)`; a truncated or garbled cfg.json or weights file is a one-line error naming
    the file and `rebuild`, the command that writes it again."""
    from safetensors import SafetensorError
    from sae_lens import SAE

    path = Path(path)
    try:
        json.loads((path / SAE_CFG_FILE).read_text())
    except ValueError as e:
        raise unreadable(path / SAE_CFG_FILE, e, rebuild) from None
    try:
        return SAE.load_from_disk(path, device=device)
    except SafetensorError as e:  # a truncated or overwritten weights file
        raise unreadable(path / SAE_WEIGHTS_FILE, e, rebuild) from None
