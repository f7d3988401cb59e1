"""HTTP for the backends (standard library only): one request with its status handling, Retry-After, and a
requests-per-minute limiter shared by all threads."""

import email.utils
import http.client
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

from teachers.client.errors import AbortRun, AuthError, RequestFailed, RetryableError


def _parse_retry_after(value):
    """Seconds from a ``Retry-After`` header (seconds or an HTTP date), or None."""
    if value is None:
        return None
    value = str(value).strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _error_message(data):
    """The server's error message from a JSON error body (OpenAI and Google shapes), else the text start."""
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data or "")
    try:
        doc = json.loads(text)
    except ValueError:
        return " ".join(text.split())[:300]
    err = doc.get("error", doc) if isinstance(doc, dict) else doc
    if isinstance(err, dict):
        msg = err.get("message") or err.get("status") or json.dumps(err)[:300]
        return str(msg)[:300]
    return str(err)[:300]


def _google_retry_delay(data):
    """``retryDelay`` of a Google RetryInfo error detail ("37s"), in seconds, or None."""
    try:
        doc = json.loads(data.decode("utf-8", "replace"))
        for detail in doc.get("error", {}).get("details", []):
            if str(detail.get("@type", "")).endswith("RetryInfo") and "retryDelay" in detail:
                return float(str(detail["retryDelay"]).rstrip("s"))
    except (ValueError, AttributeError, TypeError):
        return None
    return None


def _endpoint(url):
    """The URL without its query string, for messages."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def http_request(method, url, headers=None, body=None, timeout=60.0, key_env=None, fatal_404=False):
    """Send one request; return ``(status, headers, body bytes)`` of a 2xx answer.

    Raises :class:`RetryableError` (408, 425, 429, 5xx, timeouts, connection errors), :class:`AuthError`
    (401, 403, a Google "API key not valid" 400), :class:`AbortRun` (404 with ``fatal_404``) or
    :class:`RequestFailed` (any other status). ``key_env`` names the key's variable in messages.
    """
    req = urllib.request.Request(url, data=body, headers=dict(headers or {}), method=method)
    where = f"{method} {_endpoint(url)}"
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as e:
        try:
            data = e.read()
        except (OSError, http.client.HTTPException):
            data = b""
        status, msg = e.code, _error_message(data)
        key_hint = f"${key_env}" if key_env else "the API key"
        if status in (401, 403) or (status == 400 and ("API_KEY_INVALID" in str(data) or "API key not valid" in msg)):
            raise AuthError(f"HTTP {status} from {where}: the server refused the request ({msg}). Check "
                            f"{key_hint} (and that it may use this model); the run stops here so that no "
                            "more clips are sent with a bad key.") from None
        if status in (408, 425, 429) or status >= 500:
            retry_after = _parse_retry_after(e.headers.get("Retry-After") if e.headers else None)
            if retry_after is None and status == 429:
                retry_after = _google_retry_delay(data)
            raise RetryableError(f"HTTP {status} from {where}: {msg}", retry_after) from None
        if status == 404 and fatal_404:
            raise AbortRun(f"HTTP 404 from {where}: {msg}. Check --model and --base_url (for Ollama: "
                           "`ollama pull <model>`; for vLLM: the model name the server was started with).") from None
        raise RequestFailed(f"HTTP {status} from {where}: {msg}") from None
    except urllib.error.URLError as e:
        reason = e.reason
        if isinstance(reason, TimeoutError):
            raise RetryableError(f"{where} timed out after {timeout:g}s") from None
        raise RetryableError(f"{where} failed: {reason}") from None
    except TimeoutError:
        raise RetryableError(f"{where} timed out after {timeout:g}s") from None
    except (http.client.HTTPException, OSError) as e:
        raise RetryableError(f"{where} failed: {type(e).__name__}: {e}") from None


def _json_body(data, where):
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise RetryableError(f"{where}: the response is not JSON: {_error_message(data)[:120]}") from None


class RateLimiter:
    """At most ``rpm`` requests a minute over all threads, evenly spaced (no bursts); ``rpm`` <= 0: no limit."""

    def __init__(self, rpm, clock=time.monotonic, sleep=time.sleep):
        self.interval = 60.0 / rpm if rpm and rpm > 0 else 0.0
        self._next = None
        self._lock = threading.Lock()
        self._clock, self._sleep = clock, sleep

    def acquire(self):
        """Block until this caller's slot; returns the seconds waited."""
        if not self.interval:
            return 0.0
        with self._lock:
            now = self._clock()
            slot = now if self._next is None else max(now, self._next)
            self._next = slot + self.interval
        wait_s = slot - self._clock()
        if wait_s > 0:
            self._sleep(wait_s)
        return max(0.0, wait_s)
