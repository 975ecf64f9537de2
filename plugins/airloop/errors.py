"""The two kinds of stage errors an orchestrator must tell apart. Light on purpose: DAG files import it.

- :class:`BadInput`: the data, the config or the request is wrong; retrying cannot help, a person must fix it.
- :class:`NothingToDo`: nothing to do now (no new data, no champion yet, a guard said no); not a failure.
"""


class AirloopError(Exception):
    """Base of Airloop's own errors."""


class BadInput(AirloopError, ValueError):
    """Input that cannot be used; the message names the file, key or column, what was expected and found."""


class NothingToDo(AirloopError, LookupError):
    """The stage has nothing to do now; orchestrators skip rather than fail."""
