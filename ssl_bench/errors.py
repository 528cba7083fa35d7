"""User-facing errors: the CLI prints them as one line and exits non-zero."""


class UserError(Exception):
    """Bad input from the user (config, paths, data). The message is shown as is."""


class ConfigError(UserError):
    """A config key or value is invalid."""
