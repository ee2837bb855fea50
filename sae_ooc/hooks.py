"""TransformerLens hook names in the order the forward pass meets them. Plain strings in, no torch: the drawing code
(viz/) sorts by it as the SAE store and the readers do."""

from __future__ import annotations


def hook_sort_key(hook_name: str) -> tuple:
    """Order hooks as the forward pass meets them: blocks.0.* < blocks.1.hook_resid_pre < blocks.1.hook_resid_post."""
    parts = hook_name.split(".")
    layer = int(parts[1]) if len(parts) > 2 and parts[0] == "blocks" and parts[1].isdigit() else -1
    order = {"hook_resid_pre": 0, "hook_resid_mid": 1, "hook_resid_post": 2}
    return (layer, order.get(parts[-1], 1), hook_name)


def hook_seed(hook_name: str) -> int:
    """A small integer fixed by the hook's place in the forward pass (blocks.L.hook_resid_pre/mid/post -> 3L + 0/1/2), for
    seeds that must not move when other hooks are added to or left out of a list."""
    layer, order, _ = hook_sort_key(hook_name)
    return 3 * max(layer, 0) + order
