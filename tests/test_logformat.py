"""The log format names the console a worker's line is about, once."""

from __future__ import annotations

import logging

from solgate.logformat import FORMAT, ConsoleFormatter


def _line(message: str, *args: object) -> str:
    record = logging.LogRecord("solgate.worker", logging.INFO, __file__, 1, message, args, None)
    record.console = "web01"  # what the worker's LoggerAdapter adds
    return ConsoleFormatter(FORMAT).format(record)


def test_a_line_about_a_console_names_it() -> None:
    assert _line("session established").endswith("INFO solgate.worker [web01]: session established")


def test_a_line_that_already_names_its_console_does_not_repeat_it() -> None:
    assert _line("%s: %s", "web01", "active").endswith("INFO solgate.worker: web01: active")


def test_a_line_about_no_console_is_unchanged() -> None:
    record = logging.LogRecord("solgate.web", logging.WARNING, __file__, 1, "hello", (), None)
    assert ConsoleFormatter(FORMAT).format(record).endswith("WARNING solgate.web: hello")
