"""Training jobs: `POST /tasks` enqueues a continual stage, a worker runs it (`stage.run_stage`)."""
