"""Per-feature JSON in the field names of SAE-dashboard's Neuronpedia export (sae_dashboard.neuronpedia.neuronpedia_dashboard:
NeuronpediaDashboardFeature / NeuronpediaDashboardBatch), so those tools can load it, plus sae_ooc's own fields.

`<hook>/fNNNNN.json`: one feature, the dashboard's fields at the top level and everything else the page shows under
"sae_ooc". `<hook>/neuronpedia/batch-N.json`: the dashboard's batch format exactly (model_id, layer, sae_set,
features), which `NeuronpediaDashboardBatch(**json.load(f))` reads. Mapping: frac_nonzero = density over the cache;
freq_hist_data_* = the held-out activation histogram (bar centres, counts); logits_hist_data_* and pos/neg_str/values =
the direct-path logit effects; activations = the top examples (bin_min -1, bin_max = the feature's max, bin_contains
-1, as the dashboard marks its top-activations group) and the random sample (bin_min 0, bin_contains 1), each with every
token's activation and, as qualifying_token_index, the position it was chosen at. Checked by loading the batches with
sae-dashboard 0.8.0's NeuronpediaDashboardBatch: its to_dict() gives back every field as written.
"""

from __future__ import annotations

from sae_ooc.browse.feature_record import Example, FeatureRecord, LogitTable

NEURONPEDIA_FIELDS = ("feature_index", "neuron_alignment_indices", "neuron_alignment_values", "neuron_alignment_l1",
                      "correlated_neurons_indices", "correlated_neurons_l1", "correlated_neurons_pearson", "correlated_features_indices",
                      "correlated_features_l1", "correlated_features_pearson", "neg_str", "neg_values", "pos_str", "pos_values",
                      "frac_nonzero", "freq_hist_data_bar_values", "freq_hist_data_bar_heights", "logits_hist_data_bar_heights",
                      "logits_hist_data_bar_values", "n_prompts_total", "n_tokens_in_prompt", "dataset", "decoder_weights_dist", "vector",
                      "activations")
DATASET = "sae_ooc task prompts (RUN/activations)"


def _activation(ex: Example, bin_min: float, bin_max: float, bin_contains: float) -> dict:
    return {"bin_min": bin_min, "bin_max": bin_max, "bin_contains": bin_contains, "tokens": ex.tokens, "values": ex.values,
            "qualifying_token_index": ex.position}


def neuronpedia_feature(rec: FeatureRecord, n_prompts: int) -> dict:
    lg = rec.logits or LogitTable(pos_str=[], pos_values=[], neg_str=[], neg_values=[], hist_heights=[], hist_values=[])
    h = rec.heldout_histogram
    acts = [_activation(ex, -1, rec.max_activation, -1) for ex in rec.top_activations]
    acts += [_activation(ex, 0, rec.max_activation, 1.0) for ex in rec.random_activations]
    out = {k: [] for k in NEURONPEDIA_FIELDS}
    out.update({"feature_index": rec.feature, "neg_str": lg.neg_str, "neg_values": lg.neg_values,
                "pos_str": lg.pos_str, "pos_values": lg.pos_values, "frac_nonzero": rec.frac_nonzero,
                "freq_hist_data_bar_values": h.bar_values, "freq_hist_data_bar_heights": h.bar_heights,
                "logits_hist_data_bar_heights": lg.hist_heights, "logits_hist_data_bar_values": lg.hist_values,
                "n_prompts_total": n_prompts, "n_tokens_in_prompt": 3, "dataset": DATASET, "activations": acts})
    return out


def feature_json(rec: FeatureRecord, n_prompts: int) -> dict:
    return {**neuronpedia_feature(rec, n_prompts), "sae_ooc": rec.to_json()}


def batch_json(model_id: str, layer: int, sae_set: str, features: list[dict]) -> dict:
    return {"model_id": model_id, "layer": layer, "sae_set": sae_set, "sae_id_suffix": None, "features": features}
