"""The exceptions a user can cause. Each message is one sentence naming the bad value and what
would be accepted; the command line prints it without a traceback and exits with status 2."""


class DDPMError(Exception):
    """Base class of every error caused by a user's input rather than by a bug."""


class ConfigError(DDPMError, ValueError):
    """A configuration value, argument or option that cannot be used."""


class DataError(DDPMError):
    """A data set that is missing, malformed or cannot be read."""


class CheckpointError(DDPMError):
    """A checkpoint or run directory that is missing, not ours, damaged or does not match."""
