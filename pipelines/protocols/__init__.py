"""Data: the built-in protocol, endpoint definition and CTCAE lab criteria (read with importlib.resources)."""
