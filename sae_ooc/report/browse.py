"""Report section: the feature browser (`sae-ooc browse`): where it is, what it covers, and a screenshot of one page."""

from __future__ import annotations

from sae_ooc.saes.dead import DEAD_ON
from sae_ooc.browse.result import BrowseInfo
from sae_ooc.records import opt
from sae_ooc.report.doc import Doc


def browse_section(doc: Doc) -> None:
    run = doc.run
    doc.heading("browse", "Feature browser")
    info = doc.load_or_say(BrowseInfo, run.browse_dir)
    if info is None:
        return
    on = "every cached token (all splits and positions)"
    doc.add(f"`{run.browse_dir / 'index.html'}` opens, from disk and offline, one page per SAE feature "
            f"({doc.number('browse.n_features', info.n_features, 'the SAEs', spec='.0f')} features over {len(info.hooks)} hooks): "
            "density and activations by position, an activation histogram on the held-out prefixes, top and random activating "
            "prompts with the model's answer, logit effects through the unembedding, eval-sae's labels, attribution's node effect and "
            "the circuits it is in; the index sorts and filters them. Each feature's data is also JSON in SAE-dashboard's field names.", "",
            f"| hook | features | dead ({DEAD_ON}) | dense (on the cache) | labelled (eval-sae) |", "|---|---|---|---|---|")
    held = f"{opt(info.n_heldout_prefixes, '?')} held-out prefixes"
    for s in info.hooks:
        h = s.hook
        doc.add(f"| `{h}` | {s.d_sae} | {doc.number(f'browse.{h}.n_dead', s.n_dead, held, spec='.0f')} | "
                f"{doc.number(f'browse.{h}.n_dense', s.n_dense, on, spec='.0f')} | {s.n_labelled} |")
    doc.add("")
    if opt(info.screenshot):
        shot = run.browse_dir / info.screenshot
        doc.figure(shot)
        doc.add(f"![a feature page of the browser]({shot.name})", "")
