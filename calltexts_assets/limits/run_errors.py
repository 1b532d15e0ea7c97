"""Failures that concern a whole run, not one call."""


class RunWideError(Exception):
    """Retrying another call cannot help (expired credentials, a missing scope, no quota):
    the stage stops at once and records nothing against the calls, so a re-run after the
    fix resumes exactly where this one stopped."""
