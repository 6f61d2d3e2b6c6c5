"""Process plumbing: what `ensure_ray` lets through to the console."""

import inspect
import logging

from genrm_rl.runtime import RAY_AUTH_NOTICE, RAY_START_NOTICE, quiet_ray_start_notices


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.DEBUG)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_ray_auth_notice_is_dropped_and_nothing_else():
    """Ray's own warning functions, not a copy of their text: if Ray rewords the notice, this fails."""
    from ray._private.authentication import authentication_token_setup as setup

    seen = _Collect()
    setup.logger.addHandler(seen)
    try:
        with quiet_ray_start_notices() as notices:
            setup._warn_token_auth_enabled()   # the notice a new local cluster logs
            setup._warn_token_auth_disabled()  # a real warning: auth is off
        setup._warn_token_auth_enabled()       # outside the block it is logged again
    finally:
        setup.logger.removeHandler(seen)
    assert notices[RAY_AUTH_NOTICE].dropped == 1
    assert [m.startswith(RAY_AUTH_NOTICE) for m in seen.messages] == [False, True]
    assert "Token authentication is disabled" in seen.messages[0]


def test_ray_start_line_is_dropped_and_nothing_else():
    """The line a new local cluster logs, matched against Ray's own source (its text is built inside
    `ray.init`): if Ray rewords it, this fails instead of the line coming back unnoticed."""
    from ray._private import worker

    assert f'"{RAY_START_NOTICE}"' in inspect.getsource(worker)
    seen = _Collect()
    worker.logger.addHandler(seen)
    try:
        with quiet_ray_start_notices() as notices:
            worker.logger.info(RAY_START_NOTICE + " View the dashboard at %s", "http://127.0.0.1:8265")
            worker.logger.warning("Connected to Ray cluster.")  # anything else still gets through
        worker.logger.info(RAY_START_NOTICE)
    finally:
        worker.logger.removeHandler(seen)
    assert notices[RAY_START_NOTICE].dropped == 1
    assert seen.messages == ["Connected to Ray cluster.", RAY_START_NOTICE]
