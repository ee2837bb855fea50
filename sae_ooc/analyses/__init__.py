"""The classic mechanistic views of the trained model, one module each (attention, logit lens, activation patching,
causal tracing, probes, direct logit attribution, back-patching), run by the `analyze` stage (`analyses.analyze`).

Each module's main function is a library function on a HookedTransformer and prompt tensors that returns a
JSON-able dict; `analyses.analyze` feeds them the run's model and a seeded sample of held-out test_id prompts and
draws each result (`sae_ooc.viz.analysis_plots`).
"""
