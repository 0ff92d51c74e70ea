"""The responder model: training, evaluation, scoring, the registry, drift."""
