"""Errors every streamtalk package shares."""


class ConfigError(ValueError):
    """A setting (an environment variable or a command-line flag) has a value the service
    cannot run with; the message names the setting and what would be valid."""
