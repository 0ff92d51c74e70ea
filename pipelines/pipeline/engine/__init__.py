"""The pipeline mechanism: definitions (`definition`), executors (`executors`), the run (`execute`), run folders."""
