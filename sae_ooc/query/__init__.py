"""`sae-ooc query`: what the model and its SAEs make of a prompt, read from a finished run (session.py loads the spliced
model; view.py parses and formats, index.py and cache.py keep what is computed once per run)."""
