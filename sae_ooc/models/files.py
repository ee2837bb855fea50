"""The names of the model stage's files, without torch (the query's cache key reads them before torch is imported)."""

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
SHARING_FILE = "sharing.json"  # present only for a weight-shared model: {"weight_sharing": "blocks"}
