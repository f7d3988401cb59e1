"""Ask a vision-language model for an emotion answer per clip and keep every answer in a JSON Lines file.

Two wire formats (``Backend`` subclasses) carry one request per clip: the prompt (the subtitle appended),
and the clip's media read from disk:

* :class:`GeminiBackend`: Google's REST ``models/<model>:generateContent``; the key goes in the
  ``x-goog-api-key`` header, media inline (base64) or, past ``inline_max_mb``, through the Files API.
* :class:`OpenAIBackend`: ``<base_url>/chat/completions`` as served by OpenAI, vLLM, Ollama or LM Studio;
  frames as ``image_url``, video as ``video_url`` (vLLM's extension), audio as ``input_audio``.

:class:`TeacherRunner` runs a name list through a backend: a thread pool, one requests-per-minute limiter
for all threads, retries with exponential backoff and jitter on 429, 5xx, timeouts and connection errors,
and an output file that survives being killed at any moment (one ``write`` + ``fsync`` per record; a cut
last line is removed on the next start). A rerun continues where the last one stopped.

Output record (one JSON object a line; the first six fields are the project's teacher format)::

    name, teacher, label, scores, confidence, description,       # teacher format (README)
    confidence_source, contributions, warnings, error, error_type, raw, backend, model, media,
    n_samples, agreement, usage, elapsed_s, attempts

``error_type`` says what went wrong when ``label`` is null, and what a rerun does with the clip:

======================  ======================================================  =====================
error_type              meaning                                                 on the next run
======================  ======================================================  =====================
``None``                answered, label parsed                                  kept
``parse``               the model answered, the answer held no usable label     kept (--retry_failed)
``blocked``             the model refused or returned nothing (safety filter)   kept (--retry_failed)
``request``             the server rejected the request (HTTP 400, 413, ...)    kept (--retry_failed)
``transport``           no answer after every retry (429, 5xx, timeout, ...)    asked again
``media``               none of the requested media (or subtitle) was found     asked again
``internal``            an unexpected error in this client (a bug: report it)   asked again
======================  ======================================================  =====================

An answered clip is never asked again (it costs money); a clip that got no answer costs nothing to ask
again. A 401/403 (or Gemini's "API key not valid") or a 404 on the model endpoint stops the whole run.
"""

import base64
import contextlib
import email.utils
import http.client
import json
import logging
import math
import mimetypes
import os
import random
import re
import threading
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from common.errors import DataError
from dataloader.files import SUBTITLE_COLUMNS, index_files, natural_key, read_subtitles  # noqa: F401  (re-exported)

try:
    import fcntl
except ImportError:  # Windows: no advisory lock on the output file
    fcntl = None

LOG = logging.getLogger("mer.teacher")

VIDEO_EXTS = (".mp4", ".avi", ".mkv", ".mov", ".webm")
AUDIO_EXTS = (".wav", ".mp3", ".flac")
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
MEDIA_KINDS = ("video", "audio", "frames", "none")
MIME = {".mp4": "video/mp4", ".avi": "video/avi", ".mkv": "video/x-matroska", ".mov": "video/quicktime",
        ".webm": "video/webm", ".wav": "audio/wav", ".mp3": "audio/mp3", ".flac": "audio/flac",
        ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp",
        ".bmp": "image/bmp"}
# error types whose records a rerun keeps (the model answered or the server refused the request for good)
FINAL_ERRORS = ("parse", "blocked", "request")
SUBTITLE_BLOCK = {
    "en": "\n\nSubtitle of the clip (what is said in it):\n<<<\n{text}\n>>>\n",
    "zh": "\n\n视频字幕（视频中所说的话）：\n<<<\n{text}\n>>>\n",
}
NO_SUBTITLE = {"en": "(no subtitle)", "zh": "（无字幕）"}


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------------
# HTTP
# ---------------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------------
# Media and subtitles
# ---------------------------------------------------------------------------------------------
@dataclass
class MediaItem:
    """One media file of a clip: ``kind`` is video, audio or image; ``size`` in bytes."""
    kind: str
    path: str
    mime: str
    size: int

    def b64(self):
        with open(self.path, "rb") as f:
            return base64.b64encode(f.read()).decode("ascii")

    def ext(self):
        return os.path.splitext(self.path)[1].lower().lstrip(".")


@dataclass
class ClipInput:
    """What one clip sends: its media items, its subtitle (None: no subtitle list given), and notes."""
    name: str
    items: list = field(default_factory=list)
    subtitle: str = None
    warnings: list = field(default_factory=list)
    error: str = None

    @property
    def kinds(self):
        return sorted({"frames" if i.kind == "image" else i.kind for i in self.items})


def _mime(path):
    ext = os.path.splitext(path)[1].lower()
    return MIME.get(ext) or mimetypes.guess_type(path)[0] or "application/octet-stream"


def even_subsample(items, k):
    """``k`` items spread evenly over ``items`` (the middle of each of k equal stretches); all if fewer."""
    n = len(items)
    if k is None or k <= 0 or n <= k:
        return list(items)
    return [items[(2 * i + 1) * n // (2 * k)] for i in range(k)]


class MediaSource:
    """Finds each clip's media: ``<video_dir>/<name>.<mp4|avi|mkv|mov|webm>``, ``<audio_dir>/<name>.<wav|mp3|
    flac>``, ``<frames_dir>/<name>/*.<jpg|png|...>`` (``max_frames`` of them, evenly spread, in natural
    order), and its subtitle. ``media`` lists the kinds to send; ``("none",)`` sends the subtitle alone.

    The folders are listed once at construction (fast over 100,000 files); frame folders are read per clip.
    """

    def __init__(self, media=("video",), video_dir=None, audio_dir=None, frames_dir=None, max_frames=8,
                 subtitles=None):
        media = [m.strip().lower() for m in (media.split(",") if isinstance(media, str) else media) if m.strip()]
        bad = [m for m in media if m not in MEDIA_KINDS]
        if bad or not media:
            raise DataError(f"--media {','.join(media)}: choose from {', '.join(MEDIA_KINDS)} (comma separated)")
        if "none" in media and len(media) > 1:
            raise DataError("--media none (text only) cannot be combined with other media")
        self.media = media
        self.text_only = media == ["none"]
        dirs = {"video": video_dir, "audio": audio_dir, "frames": frames_dir}
        for kind in media:
            if kind != "none" and not dirs[kind]:
                raise DataError(f"--media {kind} needs --{kind}_dir")
        if self.text_only and subtitles is None:
            raise DataError("--media none sends the subtitle alone: give --subtitles")
        self.max_frames = max_frames
        self.subtitles = subtitles
        self._video = index_files(video_dir, VIDEO_EXTS, "video") if "video" in media else {}
        self._audio = index_files(audio_dir, AUDIO_EXTS, "audio") if "audio" in media else {}
        self._frames = {}
        if "frames" in media:
            if not os.path.isdir(frames_dir):
                raise DataError(f"--frames_dir '{frames_dir}' is not a folder")
            with os.scandir(frames_dir) as it:
                self._frames = {e.name: e.path for e in it if e.is_dir()}

    def coverage(self, names):
        """``{kind: number of names with a file}`` for each requested kind (and ``subtitle``)."""
        out = {}
        index = {"video": self._video, "audio": self._audio, "frames": self._frames}
        for kind in self.media:
            if kind != "none":
                out[kind] = sum(1 for n in names if n in index[kind])
        if self.subtitles is not None:
            out["subtitle"] = sum(1 for n in names if self.subtitles.get(n))
        return out

    def _frame_files(self, name):
        folder = self._frames.get(name)
        if folder is None:
            return []
        with os.scandir(folder) as it:
            files = [e.path for e in it if e.is_file() and os.path.splitext(e.name)[1].lower() in IMAGE_EXTS]
        files.sort(key=lambda p: natural_key(os.path.basename(p)))
        return even_subsample(files, self.max_frames)

    def find(self, name):
        """The :class:`ClipInput` of ``name``; ``error`` set when none of the requested media exists."""
        clip = ClipInput(name=name)
        if self.subtitles is not None:
            clip.subtitle = self.subtitles.get(name, "")
            if not clip.subtitle:
                clip.warnings.append("no subtitle")
        if self.text_only:
            if not clip.subtitle:
                clip.error = "text-only mode (--media none) but the clip has no subtitle"
            return clip
        missing = []
        for kind in self.media:
            paths = {"video": [self._video.get(name)], "audio": [self._audio.get(name)],
                     "frames": self._frame_files(name)}[kind]
            paths = [p for p in paths if p]
            if not paths:
                missing.append(kind)
            for p in paths:
                clip.items.append(MediaItem("image" if kind == "frames" else kind, p, _mime(p), os.path.getsize(p)))
        if not clip.items:
            clip.error = f"no media found for the clip (looked for: {', '.join(self.media)})"
        elif missing:
            clip.warnings.append("missing " + ", ".join(missing))
        return clip


def with_subtitle(prompt, subtitle, lang="en"):
    """The prompt with the subtitle: in place of a ``{SUBTITLE}`` placeholder if the prompt has one, else
    appended in a delimited block. ``subtitle`` None (no subtitle list given) leaves the prompt alone."""
    lang = lang if lang in SUBTITLE_BLOCK else "en"
    text = subtitle if subtitle else NO_SUBTITLE[lang]
    if "{SUBTITLE}" in prompt:
        return prompt.replace("{SUBTITLE}", text if subtitle is not None else NO_SUBTITLE[lang])
    if subtitle is None:
        return prompt
    return prompt.rstrip("\n") + SUBTITLE_BLOCK[lang].format(text=text)


# ---------------------------------------------------------------------------------------------
# Backends
# ---------------------------------------------------------------------------------------------
@dataclass
class Answer:
    """A model's reply: its text, notes, ``blocked`` (why there is no text, or None) and token ``usage``."""
    text: str
    warnings: list = field(default_factory=list)
    blocked: str = None
    usage: dict = None


def _deep_merge(base, extra):
    for key, value in (extra or {}).items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _deep_merge(base[key], value)
        else:
            base[key] = value
    return base


def shorten_base64(obj, keep=40):
    """A copy of a request body with base64 payloads cut to ``keep`` characters plus their length (dry runs)."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if k == "data" and isinstance(v, str) and len(v) > keep:
                out[k] = f"{v[:keep]}...<base64, {len(v)} chars>"
            else:
                out[k] = shorten_base64(v, keep)
        return out
    if isinstance(obj, list):
        return [shorten_base64(v, keep) for v in obj]
    if isinstance(obj, str) and obj.startswith("data:") and len(obj) > keep + 40:
        head, _, payload = obj.partition(",")
        return f"{head},{payload[:keep]}...<base64, {len(payload)} chars>"
    return obj


class Backend:
    """A wire format: builds a request from (prompt, media items) and reads the answer text from the reply.

    Subclasses set ``kind`` and implement :meth:`build_request` and :meth:`parse_response`. The API key is
    read from the environment variable ``api_key_env`` once; it is only ever sent in a header, and
    :meth:`redact` removes it from any text before that text is logged or stored.
    """

    kind = None

    def __init__(self, model, api_key_env=None, require_key=False, max_tokens=None, extra_body=None):
        self.model = model
        self.api_key_env = api_key_env
        self.max_tokens = max_tokens
        self.extra_body = extra_body or {}
        self._key = os.environ.get(api_key_env) if api_key_env else None
        if self._key is not None and not self._key.strip():
            self._key = None
        if require_key and not self._key:
            raise DataError(f"the environment variable {api_key_env} is not set: export {api_key_env}=<your key> "
                            f"(or name another variable with --api_key_env)")

    # -- to implement --------------------------------------------------------------------------
    def build_request(self, prompt, items, temperature=None, timeout=60.0, upload=True):
        """``(url, headers, body dict)``; ``upload=False`` never touches the network (dry runs)."""
        raise NotImplementedError

    def parse_response(self, doc):
        """The :class:`Answer` in a decoded JSON reply."""
        raise NotImplementedError

    # -- shared --------------------------------------------------------------------------------
    @property
    def has_key(self):
        return self._key is not None

    def redact(self, text):
        if text is None or not self._key:
            return text
        return str(text).replace(self._key, "***")

    def redacted_headers(self, headers):
        return {k: (f"<${self.api_key_env}>" if self._key and self._key in str(v) else v) for k, v in headers.items()}

    def generate(self, prompt, items, temperature=None, timeout=60.0):
        """One request, one :class:`Answer`; raises the errors of :func:`http_request`."""
        url, headers, body = self.build_request(prompt, items, temperature, timeout)
        data = json.dumps(body, ensure_ascii=False).encode("utf-8")
        headers = dict(headers, **{"Content-Type": "application/json"})
        _, _, raw = http_request("POST", url, headers, data, timeout, self.api_key_env, fatal_404=True)
        return self.parse_response(_json_body(raw, f"POST {_endpoint(url)}"))

    def release(self, items):
        """Free what a clip's requests left on the server (uploaded files); never raises."""

    def describe(self):
        return f"{self.kind} {self.model}"


class GeminiBackend(Backend):
    """Google Gemini over REST (``POST {base}/v1beta/models/{model}:generateContent``).

    Media go inline (base64 ``inline_data``) while their encoded total stays under ``inline_max_mb``;
    beyond it the largest files go through the Files API (resumable upload, polled until ACTIVE,
    referenced as ``file_data``) and are deleted when the clip is done (``keep_uploads=False``).
    """

    kind = "gemini"

    def __init__(self, model, api_key_env="GEMINI_API_KEY", base_url="https://generativelanguage.googleapis.com",
                 inline_max_mb=15.0, max_tokens=None, extra_body=None, require_key=True, poll_interval=2.0,
                 poll_timeout=600.0, keep_uploads=False):
        super().__init__(model, api_key_env, require_key, max_tokens, extra_body)
        self.base_url = base_url.rstrip("/")
        self.inline_max_bytes = float(inline_max_mb) * 1024 * 1024
        self.poll_interval, self.poll_timeout = poll_interval, poll_timeout
        self.keep_uploads = keep_uploads
        self._uploads = {}  # path -> (file name "files/<id>", uri)
        self._lock = threading.Lock()

    def _headers(self):
        return {"x-goog-api-key": self._key} if self._key else {}

    def _to_upload(self, items):
        """The items to send through the Files API: the largest first until the inline rest fits."""
        inline = sum(4 * math.ceil(i.size / 3) for i in items)
        chosen = []
        for item in sorted(items, key=lambda i: -i.size):
            if inline <= self.inline_max_bytes:
                break
            chosen.append(item)
            inline -= 4 * math.ceil(item.size / 3)
        return {id(i) for i in chosen}

    def upload(self, item, timeout=60.0):
        """Upload one file (resumable protocol) and wait until it is ACTIVE; returns its URI (cached per path)."""
        with self._lock:
            if item.path in self._uploads:
                return self._uploads[item.path][1]
        start = self.base_url + "/upload/v1beta/files"
        headers = dict(self._headers(), **{
            "X-Goog-Upload-Protocol": "resumable", "X-Goog-Upload-Command": "start",
            "X-Goog-Upload-Header-Content-Length": str(item.size),
            "X-Goog-Upload-Header-Content-Type": item.mime, "Content-Type": "application/json"})
        meta = json.dumps({"file": {"display_name": os.path.basename(item.path)}}).encode()
        _, resp_headers, _ = http_request("POST", start, headers, meta, timeout, self.api_key_env)
        upload_url = resp_headers.get("X-Goog-Upload-URL")
        if not upload_url:
            raise RetryableError(f"POST {start}: no X-Goog-Upload-URL header in the reply")
        with open(item.path, "rb") as f:
            data = f.read()
        headers = dict(self._headers(), **{"Content-Length": str(len(data)), "Content-Type": item.mime,
                                           "X-Goog-Upload-Offset": "0", "X-Goog-Upload-Command": "upload, finalize"})
        _, _, raw = http_request("POST", upload_url, headers, data, max(timeout, 60.0), self.api_key_env)
        info = _json_body(raw, "Files API upload").get("file", {})
        name, uri = info.get("name"), info.get("uri")
        if not name or not uri:
            raise RetryableError(f"Files API upload of {os.path.basename(item.path)}: no file name/uri in the reply")
        with self._lock:
            self._uploads[item.path] = (name, uri)
        state, deadline = info.get("state"), time.monotonic() + self.poll_timeout
        while state not in (None, "ACTIVE"):
            if state == "FAILED":
                raise RequestFailed(f"the Files API could not process {os.path.basename(item.path)} (state FAILED)")
            if time.monotonic() > deadline:
                raise RetryableError(f"{name} still {state} after {self.poll_timeout:g}s")
            time.sleep(self.poll_interval)
            _, _, raw = http_request("GET", f"{self.base_url}/v1beta/{name}", self._headers(), None, timeout,
                                     self.api_key_env)
            state = _json_body(raw, f"GET {name}").get("state")
        return uri

    def build_request(self, prompt, items, temperature=None, timeout=60.0, upload=True):
        big = self._to_upload(items)
        parts = []
        for item in items:
            if id(item) in big:
                uri = self.upload(item, timeout) if upload else f"<Files API upload of {item.path} ({item.size} bytes)>"
                parts.append({"file_data": {"mime_type": item.mime, "file_uri": uri}})
            else:
                parts.append({"inline_data": {"mime_type": item.mime, "data": item.b64()}})
        parts.append({"text": prompt})
        body = {"contents": [{"role": "user", "parts": parts}]}
        gen = {}
        if temperature is not None:
            gen["temperature"] = temperature
        if self.max_tokens:
            gen["maxOutputTokens"] = self.max_tokens
        if gen:
            body["generationConfig"] = gen
        _deep_merge(body, json.loads(json.dumps(self.extra_body)))
        url = f"{self.base_url}/v1beta/models/{self.model}:generateContent"
        return url, self._headers(), body

    def parse_response(self, doc):
        usage = doc.get("usageMetadata") or {}
        usage = {"input": usage.get("promptTokenCount"),
                 "output": (usage.get("candidatesTokenCount") or 0) + (usage.get("thoughtsTokenCount") or 0)} \
            if usage else None
        block = (doc.get("promptFeedback") or {}).get("blockReason")
        if block:
            return Answer("", blocked=f"prompt blocked: {block}", usage=usage)
        cands = doc.get("candidates") or []
        if not cands:
            return Answer("", blocked="no candidate in the reply", usage=usage)
        cand = cands[0]
        reason = cand.get("finishReason")
        parts = (cand.get("content") or {}).get("parts") or []
        text = "".join(p.get("text", "") for p in parts if isinstance(p, dict) and not p.get("thought"))
        if not text.strip():
            return Answer(text, blocked=f"empty answer (finishReason {reason})", usage=usage)
        warnings = [f"answer cut short (finishReason {reason})"] if reason not in (None, "STOP") else []
        return Answer(text, warnings, usage=usage)

    def release(self, items):
        if self.keep_uploads:
            return
        for item in items:
            with self._lock:
                entry = self._uploads.pop(item.path, None)
            if entry is None:
                continue
            try:
                http_request("DELETE", f"{self.base_url}/v1beta/{entry[0]}", self._headers(), None, 30.0,
                             self.api_key_env)
            except TeacherClientError as e:
                LOG.debug("could not delete %s: %s", entry[0], self.redact(str(e)))


class OpenAIBackend(Backend):
    """An OpenAI-compatible chat server (``POST {base_url}/chat/completions``): OpenAI, vLLM, Ollama, LM Studio.

    Content parts: frames as ``image_url``, video as ``video_url`` (vLLM's extension, e.g. for Qwen2.5-VL),
    audio as ``input_audio`` (base64 with its format, wav or mp3 for OpenAI), then the prompt text; a
    text-only request sends the prompt as a plain string. ``media_url="file"`` sends ``file://`` URLs instead
    of base64 for images, video and audio (a local vLLM started with ``--allowed-local-media-path``). The key
    (``api_key_env``) is optional: sent as ``Authorization: Bearer`` when the variable is set.
    """

    kind = "openai"

    def __init__(self, base_url, model, api_key_env="OPENAI_API_KEY", max_tokens=None, extra_body=None,
                 require_key=False, media_url="data"):
        super().__init__(model, api_key_env, require_key, max_tokens, extra_body)
        if media_url not in ("data", "file"):
            raise DataError(f"--media_url {media_url}: choose data or file")
        self.base_url = base_url.rstrip("/")
        self.media_url = media_url

    def _url(self, item):
        if self.media_url == "file":
            return "file://" + urllib.request.pathname2url(os.path.abspath(item.path))
        return f"data:{item.mime};base64,{item.b64()}"

    def build_request(self, prompt, items, temperature=None, timeout=60.0, upload=True):
        content = []
        for item in items:
            if item.kind == "image":
                content.append({"type": "image_url", "image_url": {"url": self._url(item)}})
            elif item.kind == "video":
                content.append({"type": "video_url", "video_url": {"url": self._url(item)}})
            elif self.media_url == "file":
                content.append({"type": "audio_url", "audio_url": {"url": self._url(item)}})
            else:
                content.append({"type": "input_audio", "input_audio": {"data": item.b64(), "format": item.ext()}})
        if content:
            content.append({"type": "text", "text": prompt})
        body = {"model": self.model, "messages": [{"role": "user", "content": content or prompt}]}
        if temperature is not None:
            body["temperature"] = temperature
        if self.max_tokens:
            body["max_tokens"] = self.max_tokens
        _deep_merge(body, json.loads(json.dumps(self.extra_body)))
        headers = {"Authorization": f"Bearer {self._key}"} if self._key else {}
        return self.base_url + "/chat/completions", headers, body

    def parse_response(self, doc):
        usage = doc.get("usage") or None
        if usage:
            usage = {"input": usage.get("prompt_tokens"), "output": usage.get("completion_tokens")}
        choices = doc.get("choices") or []
        if not choices:
            return Answer("", blocked="no choice in the reply", usage=usage)
        choice = choices[0]
        msg = choice.get("message") or {}
        content = msg.get("content")
        if isinstance(content, list):  # some servers return content parts
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        if not content or not str(content).strip():
            why = f"refusal: {msg['refusal']}" if msg.get("refusal") else \
                f"empty answer (finish_reason {choice.get('finish_reason')})"
            return Answer(content or "", blocked=why, usage=usage)
        reason = choice.get("finish_reason")
        warnings = [f"answer cut short (finish_reason {reason})"] if reason == "length" else []
        return Answer(str(content), warnings, usage=usage)


BACKENDS = {"gemini": GeminiBackend, "openai": OpenAIBackend}


def default_teacher_name(backend, model, media=("video",), samples=1):
    """``<backend>-<model>-<media>[-sc<k>]`` in file-name-safe characters, e.g. ``gemini-2.5-flash-video``,
    ``openai-Qwen2.5-VL-7B-Instruct-frames-audio`` (the backend is left out when the model name starts with it)."""
    model = str(model).rstrip("/").split("/")[-1]
    base = model if model.lower().startswith(backend.lower()) else f"{backend}-{model}"
    media = [m for m in (media.split(",") if isinstance(media, str) else media)]
    tag = "text" if list(media) == ["none"] else "-".join(media)
    name = f"{base}-{tag}" + (f"-sc{samples}" if samples > 1 else "")
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-")


# ---------------------------------------------------------------------------------------------
# Output file
# ---------------------------------------------------------------------------------------------
def _json_safe(obj):
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def record_line(record):
    """One record as the UTF-8 bytes of one JSON line (non-finite numbers become null)."""
    return (json.dumps(_json_safe(record), ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")


def _fsync_dir(path):
    try:
        fd = os.open(os.path.dirname(os.path.abspath(path)) or ".", os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path, chunks):
    """Write ``chunks`` (bytes) to ``path`` through a temporary file, fsync and rename: all or nothing."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.writelines(chunks)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path)


@dataclass
class OutputState:
    """What an existing output file holds: ``records`` (name -> a summary of its record: ``line``, ``label``,
    ``error``, ``error_type``, ``raw`` (whether there is an answer text), ``teacher``), the 1-based numbers of
    lines that are not records (``bad_lines``), whether the last line was cut short (``truncated``) and how
    many lines repeat a name (``duplicates``); ``unterminated``: the last record lacks its newline (an edited
    file). Summaries, not whole records: 100,000 records with their raw answers would take gigabytes."""
    records: dict
    bad_lines: list
    truncated: bool
    duplicates: int
    unterminated: bool = False


def _summary(obj, line):
    return {"line": line, "label": obj.get("label"), "error": obj.get("error"), "error_type": obj.get("error_type"),
            "raw": bool(obj.get("raw")), "teacher": obj.get("teacher")}


def read_output(path):
    """Read a client output file (missing: empty), line by line. A last line without its newline that does not
    parse is a write cut short by a kill; a last line that parses but lacks the newline is kept."""
    records, bad, dup, truncated, last_open = {}, [], 0, False, False
    if not os.path.exists(path):
        return OutputState(records, bad, truncated, dup)
    with open(path, "rb") as f:
        for i, line in enumerate(f, 1):
            if not line.strip(b"\x00 \t\r\n"):
                truncated = truncated or not line.endswith(b"\n")  # NUL bytes after a crash mid-write
                continue
            try:
                obj = json.loads(line.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                if line.endswith(b"\n"):
                    bad.append(i)
                else:
                    truncated = True
                continue
            if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
                bad.append(i)
                continue
            last_open = not line.endswith(b"\n")
            name, rec = obj["name"], _summary(obj, i)
            if name in records:
                dup += 1
                if _is_done(records[name], False) and not _is_done(rec, False):
                    continue  # an answered record beats a later failure
                del records[name]
            records[name] = rec
    return OutputState(records, bad, truncated, dup, unterminated=bool(records) and last_open)


def copy_lines(path, keep_lines):
    """The lines of ``path`` whose 1-based numbers are in ``keep_lines``, each ending with a newline."""
    with open(path, "rb") as f:
        for i, line in enumerate(f, 1):
            if i in keep_lines:
                yield line if line.endswith(b"\n") else line + b"\n"


def _is_done(record, retry_failed):
    """Whether a rerun leaves this record alone (see the module docstring)."""
    if record.get("label") is not None and not record.get("error"):
        return True
    if retry_failed:
        return False
    kind = record.get("error_type")
    if kind is None:  # a record of another writer without error_type: an error text means "answered"
        return bool(record.get("raw"))
    return kind in FINAL_ERRORS


class JsonlAppender:
    """Appends records to a JSON Lines file: one ``os.write`` of a whole line under a lock, then ``fsync``.

    The file is opened with O_APPEND and an exclusive ``flock``, so a second run on the same file stops
    with a clear message instead of interleaving lines.
    """

    def __init__(self, path):
        new = not os.path.exists(path)
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            if fcntl is not None:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._fd)
            raise DataError(f"'{path}' is being written by another run (it holds the file lock); wait for it "
                            "or give another --out") from None
        if new:
            _fsync_dir(path)
        self._lock = threading.Lock()

    def write(self, record):
        data = record_line(record)
        with self._lock:
            view = memoryview(data)
            while view:
                n = os.write(self._fd, view)
                view = view[n:]
            os.fsync(self._fd)

    def close(self):
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def open_output(path, names=None, retry_failed=False, log=LOG):
    """Lock the output, clean it and return ``(appender, kept records, number of records to ask again)``.

    A cut last line is reported and removed; lines that are not records stop the run (the file is probably
    not this client's); repeated names are reduced to one record, and the records of listed ``names`` (None:
    all) that this run asks again are dropped, so each clip has one record at any time. The cleaned file
    replaces the old one atomically (only when something changed).
    """
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    appender = JsonlAppender(path)  # the lock first, then read
    try:
        state = read_output(path)
        if state.bad_lines:
            shown = ", ".join(str(i) for i in state.bad_lines[:10])
            raise DataError(f"'{path}' has {len(state.bad_lines)} lines that are not JSON records with a 'name' "
                            f"(lines {shown}); it is not (only) this client's output. Remove those lines or "
                            "give another --out")
        listed = None if names is None else set(names)
        keep = {n: r for n, r in state.records.items()
                if _is_done(r, retry_failed) or (listed is not None and n not in listed)}
        redo = len(state.records) - len(keep)
        if state.truncated:
            log.warning("'%s': the last line was cut short (a run killed while writing); removed it, its clip "
                        "will be asked again", path)
        if state.duplicates:
            log.warning("'%s': %d repeated names; kept one record each (an answered one first)", path,
                        state.duplicates)
        if state.truncated or state.duplicates or state.unterminated or redo:
            atomic_write(path, copy_lines(path, {r["line"] for r in keep.values()}))
            appender.close()
            appender = JsonlAppender(path)
        return appender, keep, redo
    except BaseException:
        appender.close()
        raise


# ---------------------------------------------------------------------------------------------
# Self-consistency
# ---------------------------------------------------------------------------------------------
def aggregate_answers(parsed, labels):
    """Combine k parsed answers: majority label (ties: the higher mean score, then label-set order), mean
    renormalised scores, ``agreement`` = share of labelled answers with the majority label, ``confidence`` =
    5 x agreement. Returns a dict shaped like :func:`teachers.parse.parse_answer`'s plus
    ``agreement``."""
    ok = [p for p in parsed if p.get("label")]
    warnings = []
    for p in parsed:
        for w in p.get("warnings") or []:
            if w not in warnings:
                warnings.append(w)
    if len(ok) < len(parsed):
        warnings.append(f"{len(parsed) - len(ok)} of {len(parsed)} answers had no label")
    vectors = [p["scores"] for p in parsed if isinstance(p.get("scores"), dict) and p["scores"]]
    scores = None
    if vectors:
        mean = {lab: sum(float(v.get(lab) or 0.0) for v in vectors) / len(vectors) for lab in labels}
        total = sum(mean.values())
        scores = {lab: s / total for lab, s in mean.items()} if total > 0 else None
    if not ok:
        errors = [p.get("error") for p in parsed if p.get("error")]
        return {"label": None, "scores": scores, "confidence": None, "confidence_source": "none",
                "description": "", "contributions": None, "warnings": warnings, "agreement": None,
                "error": errors[0] if errors else "no answer held a label"}
    counts = Counter(p["label"] for p in ok)
    top = max(counts.values())
    order = {lab: i for i, lab in enumerate(labels)}
    tied = [lab for lab, c in counts.items() if c == top]
    label = min(tied, key=lambda lab: (-(scores or {}).get(lab, 0.0), order.get(lab, len(order))))
    first = next(p for p in ok if p["label"] == label)
    agreement = top / len(ok)
    return {"label": label, "scores": scores, "confidence": 5.0 * agreement, "confidence_source": "agreement",
            "description": first.get("description") or "", "contributions": first.get("contributions"),
            "warnings": warnings, "agreement": agreement, "error": None}


# ---------------------------------------------------------------------------------------------
# Runner
# ---------------------------------------------------------------------------------------------
class TeacherRunner:
    """Runs clips through a backend and appends one record per clip to ``out``.

    ``prompt``: the prompt text (label set filled in); ``labels``: the label set the parser maps answers to;
    ``samples``: answers per clip (self-consistency when > 1); ``rpm``: requests a minute over all threads
    (0: no limit); ``max_retries``: retries per request after the first try; ``backoff``: the first retry
    delay in seconds (doubling, with jitter, at most ``max_backoff``); ``max_consecutive_failures``: stop
    when that many clips in a row got no answer (0: never).
    """

    def __init__(self, backend, prompt, labels, source, out, teacher=None, lang="en", workers=4, rpm=0,
                 timeout=120.0, max_retries=5, backoff=2.0, max_backoff=60.0, samples=1, temperature=None,
                 retry_failed=False, max_consecutive_failures=20, progress=True, log=LOG, seed=None):
        from teachers.parse import parse_answer

        if samples < 1:
            raise DataError("--samples must be at least 1")
        if samples > 1 and temperature is not None and temperature <= 0:
            raise DataError(f"--samples {samples} needs --temperature > 0 (k answers at temperature 0 are the "
                            "same answer k times)")
        self._parse = parse_answer
        self.backend, self.prompt, self.labels, self.source = backend, prompt, list(labels), source
        self.out, self.lang = out, lang
        self.samples = samples
        self.temperature = 1.0 if samples > 1 and temperature is None else temperature
        self.teacher = teacher or default_teacher_name(backend.kind, backend.model, source.media, samples)
        self.workers, self.timeout = max(1, int(workers)), float(timeout)
        self.max_retries, self.backoff, self.max_backoff = int(max_retries), float(backoff), float(max_backoff)
        self.retry_failed = retry_failed
        self.max_consecutive_failures = int(max_consecutive_failures)
        self.limiter = RateLimiter(rpm)
        self.progress, self.log = progress, log
        self._rng = random.Random(seed)
        self._rng_lock = threading.Lock()
        self._stop = threading.Event()
        self._warned = Counter()

    # -- one clip ------------------------------------------------------------------------------
    def _retrying(self, fn, name):
        """``(result, attempts)`` of ``fn`` with retries; a final RetryableError carries ``attempts``."""
        for attempt in range(self.max_retries + 1):
            if self._stop.is_set():
                raise _Stopped()
            self.limiter.acquire()
            try:
                return fn(), attempt + 1
            except RetryableError as e:
                e.attempts = attempt + 1
                if attempt == self.max_retries:
                    raise
                if e.retry_after is not None:
                    delay = min(e.retry_after, 600.0)
                else:
                    with self._rng_lock:
                        jitter = 0.5 + 0.5 * self._rng.random()
                    delay = min(self.max_backoff, self.backoff * 2 ** attempt) * jitter
                self.log.debug("%s: %s; retry %d/%d in %.1fs", name, self.backend.redact(str(e)), attempt + 1,
                               self.max_retries, delay)
                if self._stop.wait(delay):
                    raise _Stopped() from None
            except RequestFailed as e:
                e.attempts = attempt + 1
                raise

    def _record(self, name):
        return {"name": name, "teacher": self.teacher, "label": None, "scores": None, "confidence": None,
                "description": "", "confidence_source": "none", "contributions": None, "warnings": [],
                "error": None, "error_type": None, "raw": None, "backend": self.backend.kind,
                "model": self.backend.model, "media": [], "n_samples": self.samples, "agreement": None,
                "usage": None, "elapsed_s": None, "attempts": 0}

    def process(self, name):
        """Ask for one clip and return its record (never raises for a per-clip failure)."""
        if self._stop.is_set():
            raise _Stopped()
        t0 = time.monotonic()
        rec = self._record(name)
        try:
            clip = self.source.find(name)
            rec["warnings"] = list(clip.warnings)
            rec["media"] = clip.kinds + (["subtitle"] if clip.subtitle else [])
            if clip.error:
                rec.update(error=clip.error, error_type="media")
                return rec
            prompt = with_subtitle(self.prompt, clip.subtitle, self.lang)
            raws, parsed, usage = [], [], {"input": 0, "output": 0}
            try:
                for _ in range(self.samples):
                    answer, n = self._retrying(
                        lambda: self.backend.generate(prompt, clip.items, self.temperature, self.timeout), name)
                    rec["attempts"] += n
                    raws.append(answer.text)
                    for key in usage:
                        usage[key] += int((answer.usage or {}).get(key) or 0)
                    if answer.blocked:
                        parsed.append({"label": None, "error": answer.blocked, "warnings": answer.warnings,
                                       "blocked": True})
                    else:
                        p = dict(self._parse(answer.text, self.labels))
                        p["warnings"] = list(answer.warnings) + list(p.get("warnings") or [])
                        parsed.append(p)
            except (RetryableError, RequestFailed) as e:
                rec["attempts"] += e.attempts
                kind = "transport" if isinstance(e, RetryableError) else "request"
                what = f"after {e.attempts} attempts" if kind == "transport" else ""
                rec.update(error=self.backend.redact(f"{e} {what}".strip()), error_type=kind,
                           raw=(raws if self.samples > 1 else (raws[0] if raws else None)) or None)
                return rec
            finally:
                self.backend.release(clip.items)
            rec["raw"] = raws if self.samples > 1 else raws[0]
            rec["usage"] = usage if any(usage.values()) else None
            if self.samples > 1:
                result = aggregate_answers(parsed, self.labels)
            else:
                result = dict(parsed[0])
                result.setdefault("agreement", None)
            for key in ("label", "scores", "confidence", "confidence_source", "contributions", "agreement"):
                rec[key] = result.get(key)
            rec["description"] = result.get("description") or ""
            rec["confidence_source"] = rec["confidence_source"] or "none"
            rec["warnings"] += [w for w in result.get("warnings") or [] if w not in rec["warnings"]]
            if rec["label"] is None:
                all_blocked = all(p.get("blocked") for p in parsed)
                rec["error"] = result.get("error") or "no label in the answer"
                rec["error_type"] = "blocked" if all_blocked else "parse"
            elif result.get("error"):
                rec["warnings"].append(str(result["error"]))
            return rec
        except (_Stopped, AbortRun):
            raise
        except Exception as e:  # a bug must not end a 100,000-clip run: record it, ask again next run
            self._warn_limited("internal", f"{name}: unexpected error\n{self.backend.redact(traceback.format_exc())}",
                               limit=3)
            rec.update(error=self.backend.redact(f"{type(e).__name__}: {e}"), error_type="internal")
            return rec
        finally:
            rec["elapsed_s"] = round(time.monotonic() - t0, 3)

    # -- the run -------------------------------------------------------------------------------
    def _warn_limited(self, kind, msg, limit=10):
        self._warned[kind] += 1
        if self._warned[kind] <= limit:
            self.log.warning(msg)
        if self._warned[kind] == limit:
            self.log.warning("further %s failures are counted, not shown (see the 'error' field)", kind)

    def _log_plan(self, names, todo, redo, t0):
        n_done = len(names) - len(todo)
        self.log.info("%s: %d clips listed, %d already answered in %s, %d to ask%s", self.teacher, len(names),
                      n_done, self.out, len(todo), f" ({redo} earlier failures asked again)" if redo else "")
        if todo:
            cov = self.source.coverage(todo)
            self.log.info("media of the clips to ask: %s",
                          ", ".join(f"{k} {v}/{len(todo)}" for k, v in cov.items()) or "none")
        rpm = round(60 / self.limiter.interval) if self.limiter.interval else "unlimited"
        temp = f" at temperature {self.temperature}" if self.temperature is not None else ""
        self.log.info("backend %s, %d workers, rpm %s, timeout %gs, %d retries, %d sample(s)%s; loaded in %.1fs",
                      self.backend.describe(), self.workers, rpm, self.timeout, self.max_retries, self.samples,
                      temp, time.monotonic() - t0)

    def _drive(self, todo, appender, tally, bar):
        """Keep at most 2 x workers clips in flight, write each record as it comes; returns the error that
        stopped the run, or None."""
        fatal, pending, in_flight = None, iter(todo), {}
        pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="teacher")
        try:
            while True:
                while not self._stop.is_set() and len(in_flight) < 2 * self.workers:
                    name = next(pending, None)
                    if name is None:
                        break
                    in_flight[pool.submit(self.process, name)] = name
                if not in_flight:
                    return fatal
                finished, _ = wait(list(in_flight), return_when=FIRST_COMPLETED)
                for fut in finished:
                    name = in_flight.pop(fut)
                    try:
                        rec = fut.result()
                    except _Stopped:
                        continue
                    except AbortRun as e:
                        fatal = fatal or type(e)(self.backend.redact(str(e)))
                        self._stop.set()
                        continue
                    appender.write(rec)
                    tally.add(rec)
                    if rec["error_type"] is not None:
                        self._warn_limited(rec["error_type"], f"{name}: {rec['error_type']} failure: {rec['error']}")
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(tally.postfix(), refresh=False)
                    if self.max_consecutive_failures and tally.consecutive >= self.max_consecutive_failures \
                            and fatal is None:
                        fatal = AbortRun(f"{tally.consecutive} clips in a row got no answer (last: {rec['error']}); "
                                         "stopping. Is the server up and does it accept the request? Rerun to "
                                         "continue: answered clips are kept, failed ones are asked again.")
                        self._stop.set()
        except KeyboardInterrupt:
            self._stop.set()
            self.log.warning("interrupted: waiting for the requests in flight (at most --timeout seconds); the "
                             "output stays valid whatever happens")
            for fut in in_flight:
                fut.cancel()
            for fut in in_flight:
                if not fut.cancelled() and fut.exception() is None:
                    appender.write(fut.result())
                    tally.add(fut.result())
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def run(self, names):
        """Ask about every name without a kept record; returns a summary dict (``aborted``: "interrupted" after
        Ctrl-C, else None). Raises :class:`AuthError` / :class:`AbortRun` after writing what was answered."""
        t0 = time.monotonic()
        names = list(dict.fromkeys(str(n) for n in names))
        appender, done, redo = open_output(self.out, names, self.retry_failed, self.log)
        tally, bar, aborted, fatal = _Tally(), None, None, None
        try:
            done = {n: r for n, r in done.items() if _is_done(r, self.retry_failed)}
            others = sorted({str(r["teacher"]) for r in done.values() if r.get("teacher") not in (None, self.teacher)})
            if others:
                self.log.warning("'%s' holds records of other teachers too (%s): give another --out to keep them "
                                 "apart", self.out, ", ".join(others[:5]))
            todo = [n for n in names if n not in done]
            self._log_plan(names, todo, redo, t0)
            redirect = contextlib.nullcontext()
            if self.progress and todo:
                from tqdm import tqdm
                from tqdm.contrib.logging import logging_redirect_tqdm
                bar = tqdm(total=len(todo), unit="clip", dynamic_ncols=True, smoothing=0.05)
                redirect = logging_redirect_tqdm(loggers=[self.log])  # log lines above the bar, not through it
            t_run = time.monotonic()
            with redirect:
                try:
                    fatal = self._drive(todo, appender, tally, bar)
                except KeyboardInterrupt:
                    aborted = "interrupted"
        finally:
            appender.close()
            if bar is not None:
                bar.close()
        summary = dict(tally.summary(), teacher=self.teacher, out=self.out, listed=len(names),
                       already=len(names) - len(todo), elapsed_s=round(time.monotonic() - t_run, 2),
                       aborted=aborted or (str(fatal) if fatal else None))
        self.log.info(summary_line(summary))
        if tally.labels:
            self.log.info("labels of this run: %s",
                          ", ".join(f"{k} {v / tally.counts['ok']:.0%}" for k, v in tally.labels.most_common()))
        if fatal is not None:
            self.log.error("stopped: %s", fatal)
            raise fatal
        return summary


class _Tally:
    """Counts of a run: records by outcome, labels, tokens, and clips in a row that got no answer."""

    OUTCOME = {None: "ok", "parse": "parse_fail", "blocked": "parse_fail", "transport": "transport_fail"}

    def __init__(self):
        self.counts, self.labels, self.tokens, self.consecutive = Counter(), Counter(), Counter(), 0

    def add(self, rec):
        kind = rec["error_type"]
        self.counts[self.OUTCOME.get(kind, "other_fail")] += 1
        if kind is None:
            self.labels[rec["label"]] += 1
        self.consecutive = self.consecutive + 1 if kind in ("transport", "request") else 0
        for key, value in (rec.get("usage") or {}).items():
            self.tokens[key] += value or 0

    def postfix(self):
        return {"ok": self.counts["ok"], "parse_fail": self.counts["parse_fail"],
                "transport_fail": self.counts["transport_fail"], "other": self.counts["other_fail"]}

    def summary(self):
        return {"asked": sum(self.counts.values()), "ok": self.counts["ok"], "parse_fail": self.counts["parse_fail"],
                "transport_fail": self.counts["transport_fail"], "other_fail": self.counts["other_fail"],
                "tokens": dict(self.tokens) or None, "labels": dict(self.labels.most_common())}


def summary_line(s):
    """One line: what this run did, how fast, where it went."""
    rate = s["asked"] / s["elapsed_s"] if s["elapsed_s"] else 0.0
    tok = ""
    if s.get("tokens"):
        tok = f", tokens in {s['tokens'].get('input', 0):,} out {s['tokens'].get('output', 0):,}"
    return (f"{s['teacher']}: asked {s['asked']} clips (ok {s['ok']}, parse failures {s['parse_fail']}, "
            f"transport failures {s['transport_fail']}, other failures {s['other_fail']}) in "
            f"{s['elapsed_s']:.1f}s ({rate:.2f} clips/s{tok}); {s['already']} already answered; -> {s['out']}")


def build_backend(name, model, base_url=None, api_key_env=None, require_key=True, **kwargs):
    """A backend by name (``gemini`` | ``openai``) with command-line style arguments."""
    if name not in BACKENDS:
        raise DataError(f"unknown --backend '{name}': choose {', '.join(BACKENDS)}")
    if not model:
        raise DataError("--model is required (e.g. gemini-2.5-flash, Qwen/Qwen2.5-VL-7B-Instruct)")
    if name == "gemini":
        kw = {k: v for k, v in kwargs.items() if k in ("inline_max_mb", "max_tokens", "extra_body", "poll_interval",
                                                      "poll_timeout", "keep_uploads")}
        if base_url:
            kw["base_url"] = base_url
        return GeminiBackend(model, api_key_env or "GEMINI_API_KEY", require_key=require_key, **kw)
    if not base_url:
        raise DataError("--backend openai needs --base_url (e.g. http://localhost:8000/v1 for vLLM, "
                        "http://localhost:11434/v1 for Ollama, https://api.openai.com/v1)")
    kw = {k: v for k, v in kwargs.items() if k in ("max_tokens", "extra_body", "media_url")}
    # a key named on the command line must exist; the default OPENAI_API_KEY is optional (local servers)
    return OpenAIBackend(base_url, model, api_key_env or "OPENAI_API_KEY",
                         require_key=bool(api_key_env) and require_key, **kw)
