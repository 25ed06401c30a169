"""The exceptions a user can cause. Each message is one sentence naming the bad value and what
would be accepted; the command line prints it without a traceback and exits with status 2."""


def first_line(err: BaseException, limit: int | None = None) -> str:
    """The first line of ``err``'s message (its type's name where the message is empty), cut to
    ``limit`` characters: another library's error quoted inside one of ours."""
    text = str(err).strip()
    line = text.splitlines()[0] if text else type(err).__name__
    return line if limit is None else line[:limit]


class DDPMError(Exception):
    """Base class of every error caused by a user's input rather than by a bug."""


class ConfigError(DDPMError, ValueError):
    """A configuration value, argument or option that cannot be used."""


class DataError(DDPMError):
    """A data set that is missing, malformed or cannot be read."""


class CheckpointError(DDPMError):
    """A checkpoint or run directory that is missing, not ours, damaged or does not match."""
