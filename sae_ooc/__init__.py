"""sae_ooc: how does a transformer do out-of-context two-hop inference? Toy models, SAEs, circuits."""

__version__ = "0.1.0"
