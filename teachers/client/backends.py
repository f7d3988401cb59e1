"""The wire formats: Google's Gemini REST API and OpenAI-compatible chat completions (OpenAI, vLLM, Ollama, LM
Studio), one request per clip, and the answer they return."""

import json
import logging
import math
import os
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field

from common.errors import DataError
from teachers.client.errors import RequestFailed, RetryableError, TeacherClientError
from teachers.client.transport import _endpoint, _json_body, http_request

LOG = logging.getLogger("mer.teacher")


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
