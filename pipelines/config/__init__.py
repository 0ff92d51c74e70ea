"""Typed settings: the run configuration, protocol, follow-up and endpoint settings, features."""
