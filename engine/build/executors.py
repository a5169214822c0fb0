"""Where a build's tasks run: threads in this process (local, the default) or a Ray cluster.

The builder describes its work as :class:`Task` objects (a module-level function, its arguments,
and the peak memory and CPUs it needs) and hands them to an :class:`Executor`, which runs them
and yields ``(task, result)`` pairs as they finish. Tasks communicate only through files in the
output directory (written atomically), never through return values bigger than a small dict, so
the same tasks run unchanged on one machine or on many that share that directory.

- :class:`LocalExecutor`: a thread (or process) pool in this process. At most ``workers`` tasks
  run at once, and a task starts only while the estimated peaks of the running ones plus its own
  fit in ``max_memory`` (one task always runs, however large).
- :class:`RayExecutor`: one Ray task per :class:`Task`, with ``memory=`` its estimated peak and
  ``num_cpus=`` its CPUs, so Ray's scheduler does the memory admission across the cluster; a task
  whose worker dies is retried (``max_retries``). With no address Ray starts embedded on this
  machine (``num_cpus`` = this machine's cores, reservable memory = ``max_memory``); with an
  address (``"auto"``, ``"ray://head:10001"``, ``"head:6379"``) it joins that cluster. Ray is
  imported only here and only when a RayExecutor is made: it lives in the optional ``ray`` extra.

Test hook: when the environment variable ``NGRAM_TEST_CRASH_DIR`` names a directory holding a
file ``<task key>.arm``, the process running that task renames the file to ``<task key>.fired``
and exits at once (``os._exit``), as a worker killed mid-task would. Only meaningful where tasks
run in processes of their own (Ray, or LocalExecutor(processes=True)).
"""

from __future__ import annotations

import abc
import collections
import os
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

from engine.errors import BuildError

__all__ = ["CRASH_HOOK_ENV", "Executor", "LocalExecutor", "RayExecutor", "Task", "make_executor"]

CRASH_HOOK_ENV = "NGRAM_TEST_CRASH_DIR"


@dataclass(frozen=True)
class Task:
    """One unit of build work: ``fn(*args)`` needing about ``memory`` bytes at its peak."""

    key: str  # unique within a run: "sort-3", "tokenize-12"; names the task in errors and progress
    fn: Callable[..., Any]  # a module-level function (Ray and process pools pickle it by name)
    args: tuple = ()
    memory: int = 0
    cpus: float = 1.0
    kwargs: dict = field(default_factory=dict)


def run_task(task_key: str, fn: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
    """Run one task body (in whatever process the executor chose), honouring the test crash hook."""
    crash_dir = os.environ.get(CRASH_HOOK_ENV)
    if crash_dir:
        armed = os.path.join(crash_dir, f"{task_key}.arm")
        if os.path.exists(armed):
            try:
                os.replace(armed, os.path.join(crash_dir, f"{task_key}.fired"))
            except FileNotFoundError:  # another attempt fired it first
                pass
            else:
                os._exit(17)
    return fn(*args, **kwargs)


class Executor(abc.ABC):
    """Runs :class:`Task` objects; use as a context manager (or call :meth:`close`)."""

    name: str = ""
    #: True when tasks may run on other machines. The builder then tokenizes in per-slice tasks
    #: that read the inputs themselves, instead of streaming them through this process.
    distributed: bool = False

    @property
    @abc.abstractmethod
    def parallelism(self) -> int:
        """How many one-CPU tasks can run at once."""

    @abc.abstractmethod
    def run(self, tasks: Sequence[Task]) -> Iterator[tuple[Task, Any]]:
        """Run every task; yield ``(task, result)`` in completion order. A failure raises
        :class:`BuildError` naming the task: at once locally (after the running tasks stop), after
        every other task has finished on Ray (so that a rerun finds all their work done)."""

    def describe(self) -> dict:
        """How this executor ran the build, for the manifest."""
        return {"executor": self.name}

    def close(self) -> None:
        pass

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class LocalExecutor(Executor):
    """Tasks in a pool of this process: threads (default) or spawned processes."""

    name = "local"

    def __init__(self, workers: int | None = None, max_memory: int | None = None, *, processes: bool = False,
                 distributed: bool = False):
        self.workers = max(1, int(workers or os.cpu_count() or 1))
        self.max_memory = max_memory
        self.processes = processes
        self.distributed = distributed  # True runs the slice-task build path here (used by tests)

    @property
    def parallelism(self) -> int:
        return self.workers

    def run(self, tasks: Sequence[Task]) -> Iterator[tuple[Task, Any]]:
        tasks = list(tasks)
        if not tasks:
            return
        if not self.processes and (len(tasks) == 1 or self.workers == 1):
            for task in tasks:  # no pool: the plain serial loop, exceptions unchanged
                yield task, run_task(task.key, task.fn, task.args, task.kwargs)
            return
        if self.processes:
            import multiprocessing

            pool: Any = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"))
        else:
            pool = ThreadPoolExecutor(self.workers)
        queue = collections.deque(tasks)
        running: dict[Future, Task] = {}
        in_use = 0
        try:
            while queue or running:
                # Admit tasks in order while a worker is free and their peaks fit the budget.
                while queue and len(running) < self.workers and (
                        not running or self.max_memory is None or in_use + queue[0].memory <= self.max_memory):
                    task = queue.popleft()
                    running[pool.submit(run_task, task.key, task.fn, task.args, task.kwargs)] = task
                    in_use += task.memory
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for fut in sorted(done, key=lambda f: tasks.index(running[f])):
                    task = running.pop(fut)
                    in_use -= task.memory
                    try:
                        result = fut.result()
                    except BuildError:
                        raise
                    except Exception as exc:
                        raise BuildError(f"build task {task.key} failed: {type(exc).__name__}: {exc}") from exc
                    yield task, result
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


class RayExecutor(Executor):
    """Tasks as Ray tasks on an embedded Ray (no address) or an existing cluster (see module doc)."""

    name = "ray"
    distributed = True

    def __init__(self, address: str | None = None, *, max_memory: int | None = None, num_cpus: int | None = None,
                 max_retries: int = 3, init_kwargs: dict | None = None):
        try:
            import ray
        except ImportError as exc:
            raise BuildError(
                "the ray executor needs Ray: pip install 'ngram-engine[ray]' (or pip install ray), or use "
                "--executor local"
            ) from exc
        self._ray = ray
        self.address = address
        self.max_retries = int(max_retries)
        self._owns_ray = False
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": True,
                                      "configure_logging": False, **(init_kwargs or {})}
            if address:
                ray.init(address=address, **kwargs)
            else:
                kwargs.setdefault("num_cpus", num_cpus or os.cpu_count() or 1)
                kwargs.setdefault("object_store_memory", 256 << 20)  # tasks exchange files, not objects
                # Ray starts workers at nice 15 to keep its own daemons responsive; a build's tasks are
                # the work itself, so they get the same priority as the local executor's threads.
                kwargs.setdefault("_system_config", {"worker_niceness": 0})
                if max_memory:
                    kwargs.setdefault("_memory", int(max_memory))
                ray.init(**kwargs)
            self._owns_ray = True
        self._remote = ray.remote(run_task)

    @property
    def parallelism(self) -> int:
        return max(1, int(self._ray.cluster_resources().get("CPU", 1)))

    def _largest_node_memory(self) -> float:
        return max((n["Resources"].get("memory", 0) for n in self._ray.nodes() if n.get("Alive")), default=0)

    def describe(self) -> dict:
        return {"executor": self.name, "ray_address": self.address or "embedded",
                "ray_nodes": sum(1 for n in self._ray.nodes() if n.get("Alive"))}

    def run(self, tasks: Sequence[Task]) -> Iterator[tuple[Task, Any]]:
        ray = self._ray
        tasks = list(tasks)
        if not tasks:
            return
        biggest = max(t.memory for t in tasks)
        node_memory = self._largest_node_memory()
        if biggest > node_memory:
            raise BuildError(
                f"a build task needs {biggest / 2**30:.1f} GiB but the largest Ray node offers "
                f"{node_memory / 2**30:.1f} GiB of memory; give a smaller --max-memory (smaller shards) or "
                "add bigger nodes"
            )
        refs = {}
        for task in tasks:
            options: dict[str, Any] = {"num_cpus": task.cpus, "max_retries": self.max_retries,
                                       "retry_exceptions": False, "name": task.key}
            if task.memory:
                options["memory"] = int(task.memory)
            ref = self._remote.options(**options).remote(task.key, task.fn, task.args, task.kwargs)
            refs[ref] = task
        pending = list(refs)
        failures: list[BuildError] = []
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                for ref in done:
                    task = refs[ref]
                    try:
                        result = ray.get(ref)
                    except ray.exceptions.RayTaskError as exc:
                        cause = exc.cause if isinstance(getattr(exc, "cause", None), BaseException) else exc
                        if isinstance(cause, BuildError):
                            failures.append(BuildError(f"build task {task.key}: {cause}"))
                        else:
                            failures.append(BuildError(f"build task {task.key} failed: {type(cause).__name__}: {cause}"))
                        continue
                    except ray.exceptions.RayError as exc:  # the worker died more than max_retries times, ...
                        failures.append(BuildError(
                            f"build task {task.key} failed after {self.max_retries} retries: {type(exc).__name__}: "
                            f"{exc}; rerun the same command to resume"
                        ))
                        continue
                    yield task, result
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)
        if failures:
            # The other tasks were left to finish, so a rerun resumes with all of their work done.
            more = f" (and {len(failures) - 1} more failed task(s))" if len(failures) > 1 else ""
            raise BuildError(f"{failures[0]}{more}")

    def close(self) -> None:
        if self._owns_ray and self._ray.is_initialized():
            self._ray.shutdown()
        self._owns_ray = False


def make_executor(executor: "str | Executor | None", *, ray_address: str | None = None, workers: int | None = None,
                  max_memory: int | None = None) -> Executor:
    """An Executor from a name ("local", "ray") or an Executor instance (returned as is)."""
    if isinstance(executor, Executor):
        if ray_address is not None:
            raise BuildError("ray_address goes with executor='ray', not with an Executor instance")
        return executor
    if executor in (None, "local"):
        if ray_address is not None:
            raise BuildError("--ray-address needs --executor ray")
        return LocalExecutor(workers, max_memory)
    if executor == "ray":
        return RayExecutor(ray_address, max_memory=max_memory, num_cpus=workers)
    raise BuildError(f"unknown executor {executor!r}; use 'local' or 'ray'")
