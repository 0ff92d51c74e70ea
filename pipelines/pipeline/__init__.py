"""The pipelines, defined once (selection, follow-up), their launch checks and their executors."""
