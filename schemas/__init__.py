"""pandera contracts, one DataFrameModel per table, and the reference mapping tables."""
