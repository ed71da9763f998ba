"""The errors psgd reports to users: each one is a single clear line, never a traceback."""


class PsgdError(Exception):
    """Base class: bad input that ends a job with one message and exit code 2."""


class ConfigError(PsgdError, ValueError):
    """A config file, CLI override or data path is wrong."""


class FrameError(PsgdError, ValueError):
    """Bytes received from the wire are not a valid psgd frame or message."""


class NonFiniteError(PsgdError, ValueError):
    """A tensor to encode holds NaN or Inf: the run diverged, or its input is broken."""


class Interrupted(PsgdError):
    """The job stopped on a signal at a round boundary, after writing a checkpoint (exit status 3)."""


class Stalled(PsgdError):
    """A peer sent nothing within the timeout: it is stopped, dead or hung. The job ends (all
    ranks aborted) with one message naming the rank and round; the last checkpoint stays."""
