"""Where people read asiarch's output: one rule for every table and status line."""

from __future__ import annotations

from rich.console import Console

LOG_WIDTH = 200  # columns when the output is a log (CI, `ray job logs`, `| tee`): wide enough for every table


def output_console(stderr: bool = False) -> Console:
    """A terminal's own width, or a fixed wide one when the output is not a terminal (rich would clip
    tables to 80 columns there, with "…" in every cell)."""
    console = Console(stderr=stderr)
    return console if console.is_terminal else Console(stderr=stderr, width=LOG_WIDTH)
