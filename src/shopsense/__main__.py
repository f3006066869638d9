"""``python -m shopsense`` runs the CLI."""

from shopsense.cli import app

app()
