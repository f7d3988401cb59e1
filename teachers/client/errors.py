"""The teacher client's errors: retryable failures, requests that failed for good, and what stops a run."""

class TeacherClientError(Exception):
    """Base class of this module's errors."""


class RetryableError(TeacherClientError):
    """A failure worth retrying: HTTP 429/5xx, a timeout, a dropped connection. ``retry_after`` in seconds."""

    def __init__(self, message, retry_after=None):
        super().__init__(message)
        self.retry_after = retry_after
        self.attempts = 0


class RequestFailed(TeacherClientError):
    """The server rejected this request for good (HTTP 400, 413, 422, ...): not retried."""

    attempts = 0


class AbortRun(TeacherClientError):
    """Stops the whole run: a rejected key, a wrong model or URL, a server that keeps failing."""


class AuthError(AbortRun):
    """HTTP 401/403 or an invalid API key: no further request is sent."""


class _Stopped(Exception):
    """Raised in a worker when the run is stopping; the clip is left for the next run."""
