"""FLAME Serve: the serving API, continual-learning jobs and model registry around `flame_core`."""
