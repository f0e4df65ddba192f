"""Typed errors. Each names the file, column or count at fault; the CLI prints the message on one line."""

import re


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


def shown(value: object) -> str:
    """A value from the data as a terminal may show it: control characters escaped (an ESC sequence in
    an id or a text would drive the terminal: recolour it, retitle it, move the cursor; a newline in a
    path would make a one-line error two)."""
    text = str(value)
    return text if text.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def quoted(value: object, limit: int = 40) -> str:
    """A value from the data as a message quotes it: its repr, cut short (an id may be a whole text)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


_RAISED_IN_WORKER = re.compile(rf"^{re.escape(__name__)}\.(\w+): (.+)$", re.MULTILINE)  # a traceback's last line


def from_worker(exc: BaseException, doing: str) -> VecjobError:
    """What a Ray worker's failure means to the user. Ray nests the worker's exception several levels
    deep and appends its own advice to the message: the innermost VecjobError of the chain is kept as
    its own class with its first line (it names the file), else the innermost message."""
    chain, seen = [], exc
    while seen is not None and not any(seen is earlier for earlier in chain):
        chain.append(seen)
        seen = getattr(seen, "cause", None) or seen.__cause__
    ours = [e for e in chain if isinstance(e, VecjobError)]
    if ours:  # Ray's RayTaskError(InputError) is an InputError too, whose text is the worker's traceback
        kind = next(c for c in type(ours[-1]).__mro__ if issubclass(c, VecjobError) and c.__module__ == __name__)
        return kind(str(ours[-1]).strip().splitlines()[0])
    for seen in chain:  # Ray Data wraps a task's error in a UserCodeException and keeps only its text
        for name, message in reversed(_RAISED_IN_WORKER.findall(str(seen))):
            kind = globals().get(name)
            if isinstance(kind, type) and issubclass(kind, VecjobError):
                return kind(message)
    text = str(chain[-1]).strip().splitlines()
    return VecjobError(f"{doing} failed: {text[-1] if text else type(chain[-1]).__name__}")
