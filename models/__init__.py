"""Model registry package: ``registry.json`` plus one ``<model_id>/`` folder per model.

Each folder holds ``model.skops``, ``card.json`` and ``card.md``.

Holds data only. Models are written by the train flow through ``immunostrat.modelling.registry.save_model``.
"""
