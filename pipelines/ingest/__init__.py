"""Reading inputs: file readers (native, SDTM, FHIR, expression), mapping tables, run inputs."""
