"""Stage `report`: REPORT.md and summary.json over every stage's outputs (see `stage.run_report`)."""
