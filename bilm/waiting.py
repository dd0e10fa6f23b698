"""Waiting on other processes visibly, and interruptibly.

A process of a training cluster spends much of its time blocked in a
TensorFlow call that waits for another process (a step's gradients, the
chief's update, a session). `Watch` logs from a thread, every few seconds,
for what and whom the main thread waits, and lets Ctrl-C end such a wait,
which Python cannot deliver to a thread blocked in native code.

Standard library only (no TensorFlow).
"""
import contextlib
import logging
import os
import select
import signal
import socket
import threading
import time
from typing import Callable, Optional, Tuple

logger = logging.getLogger(__name__)


def is_reachable(host: str, timeout: float = 1.0) -> bool:
    """Whether a server listens at host:port (a TCP connection succeeds): a
    task whose server does not answer has not started yet, or has ended."""
    name, _, port = host.rpartition(":")
    try:
        with socket.create_connection((name, int(port)), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


class Wait(object):
    """One wait of the main thread: `describe()` says for what; `cancel`, if
    set, ends it early (closes the session the main thread is blocked in)."""

    def __init__(self, describe: Callable[[], str]):
        self.describe = describe
        self.cancel: Optional[Callable[[], None]] = None
        self.started = self.logged = time.monotonic()


class Watch(object):
    """Logs, from a daemon thread, while the main thread is inside
    `waiting(describe)` for longer than `every` seconds, then every `every`
    seconds: "<who>: waiting <s> s for <describe()>".

    Ctrl-C does not reach a main thread blocked in a TensorFlow call; while
    `listening()`, a SIGINT during a wait cancels the wait (the main thread
    then raises KeyboardInterrupt) or, if it cannot be cancelled or is still
    blocked CANCEL_GRACE_SECS later, exits the process (status 130): nothing
    is being written while a task waits.
    """
    CANCEL_GRACE_SECS = 5.0

    def __init__(self, who: str, every: float):
        self._who, self._every = who, every
        self._lock = threading.Lock()
        self._current: Optional[Wait] = None
        self._thread: Optional[threading.Thread] = None
        self._wakeup: Optional[Tuple[socket.socket, socket.socket, int]] = None
        self._cancelled: Optional[Tuple[Wait, float]] = None  # (wait, when)

    @contextlib.contextmanager
    def waiting(self, describe: Callable[[], str]):
        wait = Wait(describe)
        with self._lock:
            self._current = wait
            self._start_thread()
        try:
            yield wait
        finally:
            with self._lock:
                self._current = None

    @contextlib.contextmanager
    def listening(self):
        """Catch Ctrl-C during waits: Python's signal wake-up fd tells the
        watch thread, and SIGINT raises KeyboardInterrupt only outside waits
        (inside, TensorFlow may be turning the cancelled call's error into a
        Python exception, which a KeyboardInterrupt would garble). Only in
        the main thread with Python's default SIGINT handler; else nothing."""
        listen = threading.current_thread() is threading.main_thread() and \
            signal.getsignal(signal.SIGINT) is signal.default_int_handler
        if listen:
            reader, writer = socket.socketpair()
            reader.setblocking(False)
            writer.setblocking(False)
            previous = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
            signal.signal(signal.SIGINT, self._on_sigint)
            with self._lock:
                self._wakeup = (reader, writer, previous)
                self._start_thread()
        try:
            yield
        finally:
            if listen:
                signal.signal(signal.SIGINT, signal.default_int_handler)
                with self._lock:
                    wakeup, self._wakeup = self._wakeup, None
                signal.set_wakeup_fd(wakeup[2])
                wakeup[1].close()  # the reader stays open for a select() in flight

    def _on_sigint(self, signum, frame) -> None:
        """SIGINT in the main thread: during a wait the watch thread ends the
        wait; otherwise the usual KeyboardInterrupt."""
        if self._current is None:
            raise KeyboardInterrupt

    def _start_thread(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, daemon=True,
                                            name="bilm-cluster-watch")
            self._thread.start()

    def _loop(self) -> None:
        interval = min(self._every / 4, 1.0)
        while True:
            wakeup = self._wakeup
            if wakeup is None:
                time.sleep(interval)
            elif select.select([wakeup[0]], [], [], interval)[0]:
                try:
                    signals = wakeup[0].recv(64)
                except OSError:
                    signals = b""
                if signal.SIGINT in signals:
                    self._interrupt()
            with self._lock:
                wait, cancelled = self._current, self._cancelled
            now = time.monotonic()
            if wait is None:
                continue
            if cancelled is not None and cancelled[0] is wait and \
                    now - cancelled[1] > self.CANCEL_GRACE_SECS:
                self._exit("the wait did not end when cancelled")
            if now - wait.logged < self._every:
                continue
            wait.logged = now
            try:
                what = wait.describe()
            except Exception as err:  # the log line must not kill the watch
                what = f"other tasks (could not ask the ps: {err})"
            logger.warning("%s: waiting %.0f s for %s", self._who,
                           time.monotonic() - wait.started, what)

    def _interrupt(self) -> None:
        with self._lock:
            wait, cancelled = self._current, self._cancelled
        if wait is None:
            return  # the main thread is running Python: it raises KeyboardInterrupt
        if wait.cancel is None or (cancelled is not None and cancelled[0] is wait):
            self._exit("interrupted while waiting")
        logger.warning("%s: interrupted while waiting; stopping", self._who)
        with self._lock:
            self._cancelled = (wait, time.monotonic())
        # closing a session that is still being created blocks: not here
        threading.Thread(target=wait.cancel, daemon=True, name="bilm-cancel").start()

    def _exit(self, why: str) -> None:
        logger.warning("%s: %s; exiting", self._who, why)
        for handler in logging.getLogger().handlers:
            handler.flush()
        os._exit(130)
