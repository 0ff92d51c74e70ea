"""Data: the Jinja templates of the reports (read by immunostrat.reporting)."""
