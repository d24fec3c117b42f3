"""`python -m service.cli ...`: the `flame` command without the installed entry point (tests, a checkout)."""

from service.cli import app

app(prog_name="flame")
