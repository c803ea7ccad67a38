"""The one exception of the config layer, and the one-line text helpers its messages use."""
from __future__ import annotations


class ConfigError(ValueError):
    """A configuration problem, described in one line.

    ``keys``: the config keys the problem is about, most specific first (``"run.max_time_s"``,
    ``"models.weights"``, ``"variants.calib_samples"``): the CLI names the flag that set one of them.
    """

    def __init__(self, message: str, *, keys: tuple[str, ...] | str = ()) -> None:
        super().__init__(message)
        self.keys: tuple[str, ...] = (keys,) if isinstance(keys, str) else tuple(keys)


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's text (or its type name)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
