"""The `flame` command line. Heavy imports happen inside commands so `flame --help` is instant."""

import typer

from service.cli import analyze, bootstrap, continual, data, keys, models, serve, train, worker

app = typer.Typer(no_args_is_help=True, add_completion=False, help="FLAME: train, evaluate and serve.")
app.add_typer(data.app, name="data")
app.add_typer(analyze.app, name="analyze")
app.command("train")(train.train_command)
app.command("evaluate")(train.evaluate_command)
app.command("continual")(continual.continual_command)
app.command("bootstrap")(bootstrap.bootstrap_command)
app.command("serve")(serve.serve_command)
app.command("worker")(worker.worker_command)
app.add_typer(models.app, name="models")
app.add_typer(keys.app, name="keys")
