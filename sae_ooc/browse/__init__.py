"""Stage `browse`: an offline feature browser (static HTML + one JS and one CSS file) over every SAE feature of a run.

paths: where each page lies (torch-free, shared with `sae-ooc query`); collect: the batched pass over the activation
cache; context: what the site reads from the other stages; logits: decoder direction @ W_U; render/index/assets: the
pages; dashboard: the per-feature JSON in SAE-dashboard/Neuronpedia field names; stage: run_browse.
"""
