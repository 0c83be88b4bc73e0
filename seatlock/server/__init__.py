"""The composition root and the process around it: CLI, workers, embedded servers."""
