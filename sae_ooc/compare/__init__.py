"""`sae-ooc compare`: the same numbers across runs (seeds, sizes, families). A reader of many finished run
directories, like `sweep`, not a stage: it writes only its --out folder.

table.py: every headline number of summary.json shared by the runs (per run, mean, sd, min, max);
mechanism.py: where the bridge is carried and used, the variable circuit's shape; match.py: SAE feature matching
across runs; run.py: reads the runs, writes DIR/compare.{md,json} and the side-by-side figures (viz/compare_plots.py).
"""
