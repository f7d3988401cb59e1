"""The project's error types: bad input, and a missing optional package."""


class DataError(ValueError):
    """Bad user input: the message names the file or value and says how to fix it."""


class OptionalDependencyError(ImportError):
    """An optional package needed by the requested feature is not installed; the message names the pip command."""
