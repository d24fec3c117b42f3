"""The `flame` command line. Heavy imports happen inside commands so `flame --help` is instant.

Order matters: `default_wait_policy()` runs before any import that can load torch, because torch's
OpenMP runtime reads OMP_WAIT_POLICY once, when it loads (service/runtime.py).
"""

from service.runtime import default_wait_policy

default_wait_policy()

import typer  # noqa: E402 - after the wait policy, on purpose

from service.cli import analyze, bootstrap, continual, data, keys, models, serve, train, worker  # noqa: E402

app = typer.Typer(no_args_is_help=True, add_completion=False, help="FLAME: train, evaluate and serve.")
app.add_typer(data.app, name="data")
app.add_typer(analyze.app, name="analyze")


@app.callback()
def _settings_first() -> None:
    """Every command reads the FLAME_* settings first: a bad one is one line and exit 2."""
    from pydantic import ValidationError

    from service.cli.registry import fail
    from service.settings import describe_invalid, get_settings

    try:
        get_settings()
    except ValidationError as e:
        raise fail(describe_invalid(e)) from None


app.command("train")(train.train_command)
app.command("evaluate")(train.evaluate_command)
app.command("continual")(continual.continual_command)
app.command("bootstrap")(bootstrap.bootstrap_command)
app.command("serve")(serve.serve_command)
app.command("worker")(worker.worker_command)
app.add_typer(models.app, name="models")
app.add_typer(keys.app, name="keys")
