"""Process plumbing: what `ensure_ray` lets through to the console."""

import logging

from genrm_rl.runtime import RAY_AUTH_NOTICE, quiet_ray_auth_notice


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
        with quiet_ray_auth_notice() as notice:
            setup._warn_token_auth_enabled()   # the notice a new local cluster logs
            setup._warn_token_auth_disabled()  # a real warning: auth is off
        setup._warn_token_auth_enabled()       # outside the block it is logged again
    finally:
        setup.logger.removeHandler(seen)
    assert notice.dropped == 1
    assert [m.startswith(RAY_AUTH_NOTICE) for m in seen.messages] == [False, True]
    assert "Token authentication is disabled" in seen.messages[0]
