"""Writing a cell: a plain object with verbs added by a decorator.

    greet = Cell("greet", service="greeter", category="logic", version="1.0.0",
                 purpose="Greets a person by name")

    @greet.verb("say_hello", schema="demo/v1/Name", reply_schema="demo/v1/Greeting")
    async def say_hello(payload: dict[str, Any]) -> dict[str, Any]:
        return {"message": f"Hello {payload['name']}!"}

Handlers take the request payload and return the reply payload. ``async def``
handlers run on the event loop. Plain functions run where the cell's
``isolation`` says: ``"thread"`` (default) in the cell's own bounded thread
pool (``threads`` threads, not asyncio's shared default executor), so they may
block; ``"process"`` in the cell's own pool of ``processes`` worker processes
(started with ``spawn``), for CPU-bound work that must not hold the body's
GIL: the handler must be a module-level function importable by its
module and name, and its payload and result picklable; ``"none"`` on the event
loop itself (only for handlers that never block). Raising a ``CbsError``
sends that error; any other exception sends ``Internal`` and logs the
traceback with the envelope id. A handler that needs
the envelope or headers calls ``cbs.kernel.current_request()``.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import os
import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from cbs.contracts import Endpoint, PayloadHandler, subject_for
from cbs.contracts.envelope import ERROR_SCHEMA, check_name, check_schema

if TYPE_CHECKING:
    from concurrent.futures import Executor

# asyncio and the executors are imported where a handler runs elsewhere:
# listing cells (cbs cells, cbs plugins) needs neither.

__all__ = ["Cell", "CATEGORIES", "ISOLATIONS"]

CATEGORIES = ("ui", "io", "logic", "integration", "storage")
#: Where a cell's plain-function handlers run (see the module docstring).
ISOLATIONS = ("thread", "process", "none")
SEMVER_RE = re.compile(
    r"(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?"
)
F = TypeVar("F", bound=Callable[..., Any])


def _as_async(
    func: Callable[[dict[str, Any]], Any], executor: Callable[[], Executor | None]
) -> PayloadHandler:
    if inspect.iscoroutinefunction(func):
        handler: PayloadHandler = func
        return handler

    @functools.wraps(func)
    async def elsewhere(payload: dict[str, Any]) -> Mapping[str, Any]:
        pool = executor()
        if pool is None:
            inline: Mapping[str, Any] = func(payload)
            return inline
        import asyncio
        from concurrent.futures import ThreadPoolExecutor

        loop = asyncio.get_running_loop()
        if isinstance(pool, ThreadPoolExecutor):  # current_request() works there too
            call = functools.partial(contextvars.copy_context().run, func, payload)
            threaded: Mapping[str, Any] = await loop.run_in_executor(pool, call)
            return threaded
        result: Mapping[str, Any] = await loop.run_in_executor(pool, func, payload)
        return result

    return elsewhere


class Cell:
    """A cell: identity (the manifest) plus one endpoint per verb.

    ``max_concurrency`` bounds how many requests this cell handles at once in
    one process; requests beyond it wait in the transport, up to
    ``max_pending`` requests and ``max_pending_bytes`` bytes per verb (default:
    the body's ``max_pending`` and ``max_pending_bytes`` options); beyond
    those, callers get ``Unavailable`` at once. ``isolation``, ``threads`` and
    ``processes`` say where plain-function handlers run (see the module
    docstring); a subclass that overrides :meth:`stop` calls
    ``super().stop()`` so that the cell's pool is shut down.
    """

    def __init__(
        self,
        id: str,
        *,
        service: str | None = None,
        category: str,
        version: str,
        purpose: str,
        name: str | None = None,
        language: str = "python",
        max_concurrency: int = 100,
        max_pending: int | None = None,
        max_pending_bytes: int | None = None,
        error_schema: str = ERROR_SCHEMA,
        publishes: Sequence[str] = (),
        isolation: str = "thread",
        threads: int | None = None,
        processes: int | None = None,
    ) -> None:
        self.id = check_name("id", id)
        self.service = check_name("service", service or id)
        if category not in CATEGORIES:
            raise ValueError(f"cell {id}: category must be one of {', '.join(CATEGORIES)}")
        if max_concurrency < 1:
            raise ValueError(f"cell {id}: max_concurrency must be at least 1")
        limits = {"max_pending": max_pending, "max_pending_bytes": max_pending_bytes}
        for field, limit in limits.items():
            if limit is not None and limit < 0:
                raise ValueError(f"cell {id}: {field} must be at least 0")
        if SEMVER_RE.fullmatch(version) is None:
            raise ValueError(f"cell {id}: version {version!r} is not a semantic version (1.2.3)")
        if isolation not in ISOLATIONS:
            raise ValueError(f"cell {id}: isolation must be one of {', '.join(ISOLATIONS)}")
        if (threads is not None and threads < 1) or (processes is not None and processes < 1):
            raise ValueError(f"cell {id}: threads and processes must be at least 1")
        self.isolation = isolation
        self.threads = threads or min(max_concurrency, 8)
        self.processes = processes or os.cpu_count() or 1
        self._pool: Executor | None = None
        self.category = category
        self.version = version
        self.purpose = purpose
        self.name = name or id.replace("_", " ").capitalize()
        self.language = language
        self.max_concurrency = max_concurrency
        self.max_pending = max_pending
        self.max_pending_bytes = max_pending_bytes
        self.error_schema = check_schema(error_schema, "error_schema")
        self.publishes = tuple(publishes)
        self._endpoints: dict[str, Endpoint] = {}

    def __repr__(self) -> str:
        return f"<Cell {self.id} ({self.service}: {', '.join(self._endpoints)})>"

    @property
    def endpoints(self) -> Sequence[Endpoint]:
        return tuple(self._endpoints.values())

    def add_verb(
        self,
        verb: str,
        handler: Callable[[dict[str, Any]], Any],
        *,
        schema: str,
        reply_schema: str | None = None,
        also_accepts: Sequence[str] = (),
        **options: Any,
    ) -> None:
        """Serve ``handler`` on ``cbs.{service}.{verb}`` for requests of ``schema``.
        ``options`` are endpoint options that plugins declare and read, e.g.
        ``idempotent=True`` (safe to repeat: cbs-breaker may retry it) or
        ``durable=True`` (also consume ``Body.send`` deliveries from a
        persistent inbox: cbs-jetstream)."""
        check_name("verb", verb)
        if self.isolation == "process" and inspect.iscoroutinefunction(handler):
            raise ValueError(
                f"cell {self.id}: verb {verb!r}: isolation='process' needs a plain def"
            )
        if verb in self._endpoints:
            raise ValueError(f"cell {self.id}: verb {verb!r} is defined twice")
        self._endpoints[verb] = Endpoint(
            verb=verb,
            schema=check_schema(schema),
            handler=_as_async(handler, self._executor),
            reply_schema=None if reply_schema is None else check_schema(reply_schema),
            also_accepts=tuple(check_schema(s) for s in also_accepts),
            options=dict(options),
        )

    def verb(
        self,
        verb: str,
        *,
        schema: str,
        reply_schema: str | None = None,
        also_accepts: Sequence[str] = (),
        **options: Any,
    ) -> Callable[[F], F]:
        """Decorator form of :meth:`add_verb`; returns the function unchanged."""

        def decorate(func: F) -> F:
            self.add_verb(
                verb,
                func,
                schema=schema,
                reply_schema=reply_schema,
                also_accepts=also_accepts,
                **options,
            )
            return func

        return decorate

    def manifest(self) -> dict[str, Any]:
        serves = []
        for e in self._endpoints.values():
            entry = {
                "subject": subject_for(self.service, e.verb),
                "queue_group": self.service,
                "schema": e.schema,
            }
            if e.reply_schema:
                entry["reply_schema"] = e.reply_schema
            serves.append(entry)
        interface: dict[str, Any] = {"serves": serves}
        if self.publishes:
            interface["publishes"] = list(self.publishes)
        return {
            "id": self.id,
            "name": self.name,
            "version": self.version,
            "language": self.language,
            "category": self.category,
            "purpose": self.purpose,
            "interface": interface,
        }

    def _executor(self) -> Executor | None:
        """The cell's own pool for plain-function handlers (``None``: inline)."""
        if self.isolation == "none":
            return None
        if self._pool is None:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

            if self.isolation == "process":
                context = multiprocessing.get_context("spawn")
                self._pool = ProcessPoolExecutor(self.processes, mp_context=context)
            else:
                self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix=f"cbs-{self.id}")
        return self._pool

    async def start(self) -> None:
        """Called before the cell's endpoints are served; override to open resources."""

    async def stop(self) -> None:
        """Called after the cell's endpoints stopped; override to release
        resources (and call ``super().stop()``: it shuts the cell's pool down)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            import asyncio

            await asyncio.get_running_loop().run_in_executor(None, pool.shutdown)
