"""Scoring captions: the eleven AIC metrics' vocabulary (`vocabulary`), pycocoevalcap and the Table I layout
(`metrics`), official SPICE on Java 17 (`spice`, `java/`), the same as an `evaluate` module (`aic_metrics/`), and an
evaluation run: caption a split, resumably, and score it (`run`)."""
