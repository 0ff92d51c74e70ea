"""Reports and generated documentation: the HTML report and the data dictionary."""
