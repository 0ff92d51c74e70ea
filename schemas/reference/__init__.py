"""Data: the mapping tables (analytes, units, aliases, IFN gene sets and methods) as CSV files."""
