"""``python -m mismatch`` runs the command-line interface."""

from mismatch.cli import run

run()
