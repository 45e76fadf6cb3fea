"""The one exception type the command line turns into a single clear line (no stack trace)."""


class ConfigError(ValueError):
    """Bad user input: a config value, a data file, a dataset layout. The message names the key or file."""
