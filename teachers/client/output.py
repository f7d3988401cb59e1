"""The output file: one JSON line per clip, appended and fsync'ed, a cut last line removed at the next start, a
lock against two runs, and what a rerun keeps or asks again."""

import json
import logging
import math
import os
import threading
from dataclasses import dataclass

from common.errors import DataError

try:
    import fcntl
except ImportError:  # Windows: no advisory lock on the output file
    fcntl = None

LOG = logging.getLogger("mer.teacher")
# error types whose records a rerun keeps (the model answered or the server refused the request for good)
FINAL_ERRORS = ("parse", "blocked", "request")


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
                obj = json.loads(line.decode("utf-8-sig"))  # a BOM must not make line 1 unreadable
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
