"""Advisory file locks between processes: one writer per run folder, one packer per feature cache.

A lock is ``fcntl.flock`` on a small file that names its holder (host, pid, command, start time). The
operating system releases it when the holder exits, however it exits (SIGKILL included), so a crashed run
never leaves a lock that has to be removed by hand; the file itself stays and is reused. Works on local
disks and on NFS (Linux maps flock to POSIX locks there).

    with FileLock(path, what="run folder 'saved/x'") as lock:          # refuse at once if held
        ...
    with FileLock(path, what="feature cache 'y'", wait=True):          # wait for the holder
        ...
"""

import json
import os
import socket
import sys
import time

from common.errors import DataError

try:
    import fcntl
except ImportError:  # Windows: no flock; a lock there is only a note of the holder
    fcntl = None


class LockHeld(DataError):
    """Another process holds the lock (``wait=False``)."""


class FileLock:
    """An exclusive lock on ``path`` (created with its folder when missing).

    ``wait``: block until the holder releases it (logging who it waits for), else raise :class:`LockHeld`
    naming the holder. ``what`` names the guarded thing in messages; ``hint`` is the fix a refused user is
    told."""

    def __init__(self, path, what=None, wait=False, hint=None, logger=None):
        self.path, self.what, self.wait, self.hint, self.logger = path, what or path, wait, hint, logger
        self._fd = None

    def holder(self):
        """The holder's note (a dict), or None when the file holds none."""
        try:
            with open(self.path) as f:
                return json.loads(f.read() or "null")
        except (OSError, ValueError):
            return None

    def _describe_holder(self):
        h = self.holder()
        if not h:
            return "another process"
        return f"pid {h.get('pid')} on {h.get('host')} since {h.get('since')} ({h.get('command')})"

    def acquire(self):
        while True:
            fd = self._lock_fd()
            try:  # the file may have been removed (release(remove=True)) while this process waited for it
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        note = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S"),
                "command": " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv))[:300]}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(note).encode(), 0)
        self._fd = fd
        return self

    def _lock_fd(self):
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not self.wait:
                    os.close(fd)
                    raise LockHeld(f"{self.what} is in use by {self._describe_holder()}"
                                   + (f"; {self.hint}" if self.hint else "")) from None
                if self.logger:
                    self.logger.info(f"waiting for {self.what}: in use by {self._describe_holder()}")
                t0 = time.time()
                fcntl.flock(fd, fcntl.LOCK_EX)
                if self.logger:
                    self.logger.info(f"{self.what} released after {time.time() - t0:.1f}s")
        return fd

    def release(self, remove=False):
        """Release the lock; ``remove``: also delete the lock file (a waiter that held the old file then
        notices it is gone and locks the new one)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            if remove:
                os.remove(self.path)
            else:
                os.ftruncate(fd, 0)  # the note goes; the file stays
        except OSError:
            pass
        finally:
            os.close(fd)  # closing releases the flock

    @property
    def held(self):
        return self._fd is not None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
        return False
