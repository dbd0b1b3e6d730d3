"""The command layer: one parser, the exit codes, and one module per command."""

from fhir_cyclo.cli.app import main

__all__ = ["main"]
