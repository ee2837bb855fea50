"""Training dynamics (`sae-ooc dynamics`) and the simplest-setup sweep (`sae-ooc sweep`)."""
