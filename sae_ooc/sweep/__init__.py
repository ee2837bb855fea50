"""The simplest-setup sweep: a grid of (task, model) settings, each its own run, and its phase diagram."""
