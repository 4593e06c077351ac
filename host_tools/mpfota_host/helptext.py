"""Help text helpers shared by the subcommands."""

from __future__ import annotations

import argparse


def examples(*lines: str) -> dict:
    """add_parser() keyword arguments for an "examples:" section (one command per line)."""
    return {
        "epilog": "examples:\n" + "\n".join("  " + line for line in lines),
        "formatter_class": argparse.RawDescriptionHelpFormatter,
    }
