"""Typed errors. Each names the file, column or count at fault; the CLI prints the message on one line."""


class VecjobError(Exception):
    """Base class: an expected failure with a message meant for the user."""


class InputError(VecjobError):
    """Bad input data: not Parquet, missing or mistyped column, null texts under --strict, duplicate ids."""


class ArtifactError(VecjobError):
    """A model, vectors, index or classifier dir that is missing, incomplete or incompatible."""


class ConfigError(VecjobError):
    """A job spec or option that does not validate."""


class LockedError(VecjobError):
    """Another run holds the output directory."""


def quoted(value: object, limit: int = 40) -> str:
    """A value from the data as a message quotes it: its repr, cut short (an id may be a whole text)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def from_worker(exc: BaseException, doing: str) -> VecjobError:
    """What a Ray worker's failure means to the user. Ray nests the worker's exception several levels
    deep: a VecjobError in the chain is kept as it is (it names the file), else the innermost message."""
    seen, innermost = exc, exc
    while seen is not None:
        if isinstance(seen, VecjobError):
            return type(seen)(str(seen))
        innermost = seen
        following = getattr(seen, "cause", None) or seen.__cause__
        seen = None if following is seen else following
    text = str(innermost).strip().splitlines()
    return VecjobError(f"{doing} failed: {text[-1] if text else type(innermost).__name__}")
