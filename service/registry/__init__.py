"""The model registry: versions, aliases, tasks, datasets, jobs and the prediction audit."""
