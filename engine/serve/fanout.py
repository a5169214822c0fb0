"""Fan-out threads: long-lived workers that run a router's blocking shard calls in parallel."""

from __future__ import annotations

import _thread
import queue
import threading

__all__ = ["Fanout", "Task"]


class Task:
    """One call handed to a fan-out thread; ``result()`` waits for it (a bare lock, no Condition)."""

    __slots__ = ("fn", "args", "value", "error", "done")

    def __init__(self, fn, args):
        self.fn = fn
        self.args = args
        self.value = None
        self.error: BaseException | None = None
        self.done = _thread.allocate_lock()
        self.done.acquire()

    def result(self):
        self.done.acquire()
        self.done.release()
        if self.error is not None:
            raise self.error
        return self.value


class Fanout:
    """Long-lived threads that run blocking shard calls.

    Measured on the 2-core machine: a blocking gRPC call on a worker thread beats grpc's own
    futures (which all complete through one polling thread per channel) by 1.3x for a 3-shard
    Count, and handing two calls over and collecting them through a C-level SimpleQueue and a
    bare lock per call takes 16 us against 37 us with concurrent.futures (a Future with its
    Condition, a work item and the idle-thread semaphore per call).
    """

    def __init__(self, workers: int, name: str):
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._threads = [threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True) for i in range(workers)]
        for t in self._threads:
            t.start()

    def _work(self) -> None:
        get = self._queue.get
        while True:
            task = get()
            if task is None:
                return
            try:
                task.value = task.fn(*task.args)
            except BaseException as exc:  # handed to the caller
                task.error = exc
            task.done.release()

    def submit(self, fn, *args) -> Task:
        task = Task(fn, args)
        self._queue.put(task)
        return task

    def close(self) -> None:
        for _ in self._threads:
            self._queue.put(None)
