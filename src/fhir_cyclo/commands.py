"""CLI subcommands that talk to servers or score: push, score, sandbox (wired into cli.py)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the server-facing subcommands to the parser."""
