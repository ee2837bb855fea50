"""Causal variables: where a task variable lives, found and judged by interchange interventions (stage `variables`)."""
