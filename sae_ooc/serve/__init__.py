"""`sae-ooc serve`: the feature browser (RUN/browse/) and a live query API from one process (server.py).

The model, SAEs and feature statistics are loaded once (sae_ooc.query.session.QuerySession), so a query costs one forward
and backward pass instead of the imports and loading of a `sae-ooc query` process.
"""
