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

    name, teacher, label, scores, confidence, description,       # teacher format (docs/file-formats.md)
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

The client is one module per job: ``errors``, ``transport`` (HTTP and the rate limiter), ``media`` (each clip's
files and subtitle), ``backends`` (Gemini, OpenAI-compatible), ``output`` (the JSON Lines file), ``consistency``
(k answers combined) and ``runner`` (the run); their names are importable from ``teachers.client``.
"""

from teachers.client.errors import (  # noqa: F401
    _Stopped, AbortRun, AuthError, RequestFailed, RetryableError, TeacherClientError,
)
from teachers.client.transport import (  # noqa: F401
    _endpoint, _error_message, _google_retry_delay, _json_body, _parse_retry_after, http_request, RateLimiter,
)
from teachers.client.media import (  # noqa: F401
    _mime, AUDIO_EXTS, ClipInput, even_subsample, IMAGE_EXTS, LOG, MEDIA_KINDS, MediaItem, MediaSource, MIME,
    NO_SUBTITLE, SUBTITLE_BLOCK, VIDEO_EXTS, with_subtitle,
)
from teachers.client.backends import (  # noqa: F401
    _deep_merge, Answer, Backend, BACKENDS, default_teacher_name, GeminiBackend, OpenAIBackend, shorten_base64,
)
from teachers.client.output import (  # noqa: F401
    _fsync_dir, _is_done, _json_safe, _summary, atomic_write, copy_lines, FINAL_ERRORS, JsonlAppender,
    open_output, OutputState, read_output, record_line,
)
from teachers.client.consistency import (  # noqa: F401
    aggregate_answers,
)
from teachers.client.runner import (  # noqa: F401
    _Tally, build_backend, summary_line, TeacherRunner,
)
from dataloader.files import (  # noqa: F401
    SUBTITLE_COLUMNS, index_files, natural_key, read_subtitles,
)
