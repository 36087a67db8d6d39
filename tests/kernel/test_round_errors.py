"""RoundErrors: how background loops report failed rounds (a dependency down is one line, not a traceback)."""

from __future__ import annotations

import logging

from botcriptofy import RoundErrors, ServiceUnavailable


def test_a_dependency_down_is_one_warning_line_said_once_until_a_round_succeeds(caplog):
    log = logging.getLogger("botcriptofy.test.rounds")
    errors = RoundErrors(log, "test relay")
    down = ServiceUnavailable("The database is unreachable; nothing was written.", dependency="database")
    with caplog.at_level(logging.DEBUG, logger="botcriptofy.test.rounds"):
        errors.failed(down)
        errors.failed(down)
        errors.succeeded()
        errors.failed(down)
    records = [(r.levelno, r.getMessage(), r.exc_info) for r in caplog.records]
    assert records == [
        (logging.WARNING, "test relay paused: The database is unreachable; nothing was written.", None),
        (logging.DEBUG, f"test relay failed again: ServiceUnavailable: {down}", None),
        (logging.WARNING, "test relay paused: The database is unreachable; nothing was written.", None),
    ]


def test_an_unexpected_error_is_logged_with_its_traceback_once_while_it_repeats(caplog):
    log = logging.getLogger("botcriptofy.test.rounds")
    errors = RoundErrors(log, "test relay")
    with caplog.at_level(logging.DEBUG, logger="botcriptofy.test.rounds"):
        for _ in range(3):
            try:
                raise KeyError("handler")
            except KeyError as error:
                errors.failed(error)
    levels = [(r.levelno, r.exc_info is not None) for r in caplog.records]
    assert levels == [(logging.ERROR, True), (logging.DEBUG, False), (logging.DEBUG, False)]
    assert caplog.records[0].getMessage() == "test relay failed"
