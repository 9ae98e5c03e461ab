"""How solgate's own log lines look: time, level, logger, the console a line is about, message.

A console's worker logs through a `LoggerAdapter` that carries the console's name
(`extra={"console": name}`); the format prints it after the logger name, so a line
about web01 can be found with `grep '\\[web01\\]'` whatever its message says.  A message
that already starts with "web01:" is not given the name twice.
"""

from __future__ import annotations

import logging

__all__ = ["FORMAT", "ConsoleFormatter", "configure"]

FORMAT = "%(asctime)s %(levelname)s %(name)s%(about)s: %(message)s"


class ConsoleFormatter(logging.Formatter):
    """`FORMAT`, with `about` filled in from the record's `console`, if it has one."""

    def format(self, record: logging.LogRecord) -> str:
        console = getattr(record, "console", None)
        about = ""
        if isinstance(console, str) and console:
            if not record.getMessage().startswith(f"{console}:"):
                about = f" [{console}]"
        record.about = about
        return super().format(record)


def configure(level: int) -> None:
    """Log to stderr at `level` in solgate's format (the CLI calls this once)."""
    handler = logging.StreamHandler()
    handler.setFormatter(ConsoleFormatter(FORMAT))
    logging.basicConfig(level=level, handlers=[handler])
