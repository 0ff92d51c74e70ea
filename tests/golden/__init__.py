"""Golden fingerprints of today's outputs, taken before the one-pipeline redesign (issue 11)."""
