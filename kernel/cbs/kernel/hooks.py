"""Calling hooks: always through pluggy, in pluggy's one order.

Every hook is called with one pluggy hook call, so every hook runs its
implementations in the same documented order: pluggy's (``tryfirst`` ones
first, then the last registered first, ``trylast`` ones last).

* Registration hooks (:func:`call_registration`) are plain functions. While
  one runs, :func:`current_plugin` tells a registry which plugin is
  registering: it finds that plugin's implementation on the call stack. A
  failure becomes a ``PluginError`` naming the plugin.
* Notifications (:func:`notify`) may be ``async def``: pluggy calls every
  implementation (plain ones run then, async ones return a coroutine), then
  the coroutines are awaited one after the other, in that order.
"""

from __future__ import annotations

import contextvars
import inspect
import logging
import sys
from collections.abc import Mapping
from types import CodeType, TracebackType
from typing import Any

import pluggy

from cbs.kernel.errors import PluginError, UsageError

__all__ = ["call_registration", "notify", "current_plugin"]

log = logging.getLogger("cbs.kernel")

#: code object of a hook implementation -> (plugin object, plugin name) pairs
_Owners = Mapping[CodeType, list[tuple[object, str]]]
_owners: contextvars.ContextVar[_Owners | None] = contextvars.ContextVar("cbs_owners")


def _code(function: Any) -> CodeType | None:
    code = getattr(getattr(function, "__func__", function), "__code__", None)
    return code if isinstance(code, CodeType) else None


def _owner_map(hook: pluggy.HookCaller) -> dict[CodeType, list[tuple[object, str]]]:
    owners: dict[CodeType, list[tuple[object, str]]] = {}
    for impl in hook.get_hookimpls():
        code = _code(impl.function)
        if code is not None:
            owners.setdefault(code, []).append((impl.plugin, impl.plugin_name))
    return owners


def _match(owners: _Owners, code: CodeType, local_self: object) -> str | None:
    candidates = owners.get(code)
    if not candidates:
        return None
    if len(candidates) == 1:
        return candidates[0][1]
    # Several plugins are instances of one class: tell them apart by `self`.
    return next((name for plugin, name in candidates if plugin is local_self), None)


def current_plugin() -> str | None:
    """The plugin whose registration hook implementation is running (``None``
    outside a registration hook)."""
    owners = _owners.get(None)
    if not owners:
        return None
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code in owners:
            found = _match(owners, frame.f_code, frame.f_locals.get("self"))
            if found is not None:
                return found
        frame = frame.f_back  # type: ignore[assignment]
    return None


def _culprit(tb: TracebackType | None, owners: _Owners) -> str:
    """The plugin whose implementation is innermost in a traceback."""
    found = "?"
    while tb is not None:
        name = _match(owners, tb.tb_frame.f_code, tb.tb_frame.f_locals.get("self"))
        if name is not None:
            found = name
        tb = tb.tb_next
    return found


def call_registration(pm: pluggy.PluginManager, hook_name: str, **kwargs: Any) -> None:
    """Call a registration hook; a failure is a ``PluginError`` naming the plugin."""
    hook = getattr(pm.hook, hook_name)
    owners = _owner_map(hook)
    token = _owners.set(owners)
    try:
        hook(**kwargs)
    except UsageError:
        raise
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}"
        culprit = _culprit(exc.__traceback__, owners)
        raise PluginError(f"plugin '{culprit}' failed in {hook_name}: {reason}") from exc
    finally:
        _owners.reset(token)


async def notify(
    pm: pluggy.PluginManager, hook_name: str, *, swallow: bool = False, **kwargs: Any
) -> None:
    """Call a notification hook and await the coroutines of its ``async def``
    implementations in call order. With ``swallow``, a failure is logged and
    the other implementations still run."""
    hook = getattr(pm.hook, hook_name)
    owners = _owner_map(hook)
    called = [impl.plugin for impl in reversed(hook.get_hookimpls())]
    skip: list[object] = []
    while True:
        caller = pm.subset_hook_caller(hook_name, remove_plugins=skip) if skip else hook
        try:
            results = caller(**kwargs)
            break
        except Exception as exc:
            if not swallow:
                raise
            culprit = _culprit(exc.__traceback__, owners)
            log.error("plugin %s failed in %s", culprit, hook_name, exc_info=exc)
            # Only a plain implementation can fail here, and pluggy stopped at
            # it: go on with those after it (coroutines made before it are lost).
            plugin = next((p for p, n in _owners_items(owners) if n == culprit), None)
            if plugin is None or plugin not in called:
                return
            skip = called[: called.index(plugin) + 1]
    pending = [result for result in results if inspect.isawaitable(result)]
    for index, result in enumerate(pending):
        try:
            await result
        except Exception as exc:
            if not swallow:
                for rest in pending[index + 1 :]:  # not run: closed, not left unawaited
                    if inspect.iscoroutine(rest):
                        rest.close()
                raise
            code = getattr(result, "cr_code", None)
            name = _match(owners, code, None) if code is not None else None
            log.error("plugin %s failed in %s", name or "?", hook_name, exc_info=exc)


def _owners_items(owners: _Owners) -> list[tuple[object, str]]:
    return [pair for pairs in owners.values() for pair in pairs]
