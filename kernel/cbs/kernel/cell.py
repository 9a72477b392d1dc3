"""Writing a cell: a plain object with verbs added by a decorator.

    greet = Cell("greet", service="greeter", category="logic", version="1.0.0",
                 purpose="Greets a person by name")

    @greet.verb("say_hello", schema="demo/v1/Name", reply_schema="demo/v1/Greeting")
    async def say_hello(payload: dict[str, Any]) -> dict[str, Any]:
        return {"message": f"Hello {payload['name']}!"}

Handlers take the request payload and return the reply payload. ``async def``
handlers run on the event loop; plain functions run in a worker thread, so they
may block. Raising a ``CbsError`` sends that error; any other exception sends
``Internal`` and logs the traceback with the envelope id. A handler that needs
the envelope or headers calls ``cbs.kernel.current_request()``.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from cbs.contracts import Endpoint, PayloadHandler, subject_for
from cbs.contracts.envelope import ERROR_SCHEMA, check_name, check_schema

__all__ = ["Cell", "CATEGORIES"]

CATEGORIES = ("ui", "io", "logic", "integration", "storage")
SEMVER_RE = re.compile(
    r"(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?"
)
F = TypeVar("F", bound=Callable[..., Any])


def _as_async(func: Callable[[dict[str, Any]], Any]) -> PayloadHandler:
    if inspect.iscoroutinefunction(func):
        handler: PayloadHandler = func
        return handler

    @functools.wraps(func)
    async def in_thread(payload: dict[str, Any]) -> Mapping[str, Any]:
        result: Mapping[str, Any] = await asyncio.to_thread(func, payload)
        return result

    return in_thread


class Cell:
    """A cell: identity (the manifest) plus one endpoint per verb.

    ``max_concurrency`` bounds how many requests this cell handles at once in
    one process; requests beyond it wait in the transport, up to
    ``max_pending`` requests and ``max_pending_bytes`` bytes per verb (default:
    the body's ``max_pending`` and ``max_pending_bytes`` options); beyond
    those, callers get ``Unavailable`` at once.
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
        if verb in self._endpoints:
            raise ValueError(f"cell {self.id}: verb {verb!r} is defined twice")
        self._endpoints[verb] = Endpoint(
            verb=verb,
            schema=check_schema(schema),
            handler=_as_async(handler),
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

    async def start(self) -> None:
        """Called before the cell's endpoints are served; override to open resources."""

    async def stop(self) -> None:
        """Called after the cell's endpoints stopped; override to release resources."""
