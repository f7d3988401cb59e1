"""The run: a thread pool over the clips, retries with backoff, the rate limit, progress and the stop rules."""

import contextlib
import logging
import random
import threading
import time
import traceback
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

from common.errors import DataError
from teachers.client.backends import BACKENDS, GeminiBackend, OpenAIBackend, default_teacher_name
from teachers.client.consistency import aggregate_answers
from teachers.client.errors import AbortRun, RequestFailed, RetryableError, _Stopped
from teachers.client.media import with_subtitle
from teachers.client.output import _is_done, open_output
from teachers.client.transport import RateLimiter

LOG = logging.getLogger("mer.teacher")


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
