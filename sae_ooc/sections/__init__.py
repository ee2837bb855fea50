"""The config sections: one dataclass per YAML section, grouped by concern, each with a `validate(where)`.

`sae_ooc.config` assembles them into `Config` and re-exports every name, so code imports them from there. A new
section goes in a module here (or a new one), and one field in `config.Config`. Nothing here imports torch.
"""
