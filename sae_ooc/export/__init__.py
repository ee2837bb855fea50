"""The `export` stage: the saved circuit drawn in every format (a reader of circuit/, drawing through viz/)."""
