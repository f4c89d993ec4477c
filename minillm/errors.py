"""User-facing errors: one line that says what is wrong and where, never a bare traceback."""

from __future__ import annotations


class MinillmError(Exception):
    """A mistake in the user's config, data or paths.

    The message must name the file and line, or the config key, that is wrong. The entry points
    catch it, print ``error: <message>`` on one line and exit with status 2.
    """
