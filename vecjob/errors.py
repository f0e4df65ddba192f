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
