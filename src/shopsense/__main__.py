"""``python -m shopsense`` runs the CLI."""

from shopsense.cli import app

if __name__ == "__main__":  # not when a spawned process imports this module as its parent's main
    app()
