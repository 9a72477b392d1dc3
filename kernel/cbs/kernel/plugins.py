"""Finding and loading plugins: built-ins first, then entry points of group ``cbs``.

Loading happens when a body is built, never at import. Switches, in the
tradition of pytest's ``-p``:

* ``CBS_DISABLE_PLUGIN_AUTOLOAD=1`` / ``--disable-plugin-autoload``: load no
  entry-point plugin unless named;
* ``CBS_PLUGINS="a,b"`` / ``-p a -p b``: an allow list; when given, only these
  entry-point plugins load;
* ``CBS_PLUGINS="no:a"`` / ``-p no:a``: a block list; also blocks built-ins.
"""

from __future__ import annotations

import importlib
import os
import types
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs
import pluggy

from cbs.kernel import hookspecs
from cbs.kernel.errors import PluginError

__all__ = [
    "BUILTIN_PLUGINS",
    "CORE_DISTRIBUTIONS",
    "ENTRY_POINT_GROUP",
    "PluginInfo",
    "Selection",
    "core_distribution",
    "load_plugins",
]

ENTRY_POINT_GROUP = "cbs"

#: The distribution that ships the kernel and its built-in plugins (imports stay ``cbs.*``).
_CORE_DISTRIBUTION = "cell-body-system"

#: Built-in plugins, registered like any other (short name -> module).
BUILTIN_PLUGINS: tuple[tuple[str, str], ...] = (
    ("local", "cbs.kernel.local"),
    ("core", "cbs.kernel.commands"),
)

#: Names of the core distribution (kernel, contracts, testing kit), newest first:
#: it is being renamed from ``cbs``.
CORE_DISTRIBUTIONS = ("cell-body-system",)

hookimpl = pluggy.HookimplMarker("cbs")


@attrs.frozen
class PluginInfo:
    """What ``cbs plugins`` shows about one loaded plugin."""

    name: str
    distribution: str
    version: str
    module: str
    builtin: bool


@attrs.frozen
class Selection:
    """Which plugins to load. ``allow`` of ``None`` means all."""

    autoload: bool = True
    allow: frozenset[str] | None = None
    block: frozenset[str] = frozenset()

    @classmethod
    def from_specs(
        cls,
        specs: Iterable[str],
        *,
        autoload: bool | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> Selection:
        """Build from ``-p``-style specs (``name`` or ``no:name``) plus the
        ``CBS_PLUGINS`` and ``CBS_DISABLE_PLUGIN_AUTOLOAD`` variables of
        ``environ`` (``None``: ``os.environ``)."""
        environ = os.environ if environ is None else environ
        env_specs = [s.strip() for s in environ.get("CBS_PLUGINS", "").split(",")]
        allow: set[str] = set()
        block: set[str] = set()
        for spec in [*env_specs, *specs]:
            if not spec:
                continue
            if spec.startswith("no:"):
                block.add(spec[3:])
            else:
                allow.add(spec)
        if autoload is None:
            autoload = environ.get("CBS_DISABLE_PLUGIN_AUTOLOAD", "") in ("", "0")
        return cls(autoload, frozenset(allow) if allow or not autoload else None, frozenset(block))


def core_distribution(found: Mapping[str, Any] | None = None) -> tuple[str, str] | None:
    """``(name, version)`` of the installed core distribution (the first of
    :data:`CORE_DISTRIBUTIONS` found), or ``None`` when running uninstalled.
    ``found``: what ``cbs.kernel.entry_points.distributions()`` gave, if
    already asked."""
    from cbs.kernel.entry_points import distributions, normalize

    if found is None:
        found = distributions()
    if found is not None:
        for name in CORE_DISTRIBUTIONS:
            dist = found.get(normalize(name))
            if dist is not None:
                return name, _name_and_version(dist)[1]
        return None
    import importlib_metadata

    for name in CORE_DISTRIBUTIONS:
        try:
            installed = importlib_metadata.distribution(name)
        except importlib_metadata.PackageNotFoundError:
            continue
        return name, _name_and_version(installed)[1]
    return None


def _entry_points(found: Mapping[str, Any] | None) -> Sequence[Any]:
    """The entry points of group ``cbs``: read from the metadata directories
    ``found`` when that gives importlib_metadata's answer
    (``cbs.kernel.entry_points``), else from importlib_metadata."""
    from cbs.kernel.entry_points import entry_points_of

    eps = None if found is None else entry_points_of(found, ENTRY_POINT_GROUP)
    if eps is not None:
        return eps
    import importlib_metadata

    return list(importlib_metadata.entry_points(group=ENTRY_POINT_GROUP))


def _name_and_version(dist: Any) -> tuple[str, str]:
    """A distribution's ``Name`` and ``Version``, read from the header lines
    at the top of its core metadata. ``dist.name`` and ``dist.version`` would
    parse the whole file with the email package (about 1.5 ms a distribution,
    and 7 ms to import it, on every body start)."""
    text = dist.read_text("METADATA") or dist.read_text("PKG-INFO") or ""
    found: dict[str, str] = {}
    for line in text.splitlines():
        if not line:
            break  # the end of the header block: the description follows
        field, sep, value = line.partition(":")
        if sep and field in ("Name", "Version") and field not in found:
            found[field] = value.strip()
            if len(found) == 2:
                break
    return found.get("Name", "unknown"), found.get("Version", "unknown")


def _check_markers(name: str, plugin: Any) -> None:
    """Hooks are recognised by their marker, so an unmarked ``cbs_*`` function
    would silently do nothing: refuse it instead."""
    for attr in dir(plugin):
        value = getattr(plugin, attr)
        if attr.startswith("cbs_") and callable(value) and not hasattr(value, "cbs_impl"):
            raise PluginError(f"plugin '{name}': {attr} lacks the @hookimpl marker")


def _register(pm: pluggy.PluginManager, name: str, plugin: Any) -> None:
    _check_markers(name, plugin)
    try:
        pm.register(plugin, name=name)
    except (ValueError, pluggy.PluginValidationError) as exc:
        reason = str(exc).splitlines()[0]
        raise PluginError(f"plugin '{name}' cannot be registered: {reason}") from exc


def load_plugins(
    selection: Selection, extra: Sequence[Any] = ()
) -> tuple[pluggy.PluginManager, dict[str, PluginInfo]]:
    """A plugin manager with the built-ins, the selected entry-point plugins and
    ``extra`` (modules or objects, e.g. from tests) registered and checked."""
    from cbs.kernel.entry_points import distributions

    pm = pluggy.PluginManager("cbs")
    pm.add_hookspecs(hookspecs)
    infos: dict[str, PluginInfo] = {}
    found = distributions()  # listed once: the core's version and the entry points
    core_name, core_version = core_distribution(found) or (CORE_DISTRIBUTIONS[-1], "unknown")

    for name, module_name in BUILTIN_PLUGINS:
        if name in selection.block:
            continue
        _register(pm, name, importlib.import_module(module_name))
        infos[name] = PluginInfo(name, core_name, core_version, module_name, True)

    wanted = selection.allow
    if selection.autoload or wanted:
        for ep in _entry_points(found):
            if ep.name in selection.block or ep.name in infos:
                continue
            if wanted is not None and ep.name not in wanted:
                continue
            dist, version = _name_and_version(ep.dist) if ep.dist else ("unknown", "unknown")
            try:
                plugin = ep.load()
            except Exception as exc:
                reason = str(exc).splitlines()[0] if str(exc) else ""
                raise PluginError(
                    f"plugin '{ep.name}' (distribution {dist}) failed to load:"
                    f" {type(exc).__name__}: {reason}"
                ) from exc
            _register(pm, ep.name, plugin)
            infos[ep.name] = PluginInfo(ep.name, dist, version, ep.value, False)
        missing = sorted((wanted or set()) - set(infos))
        if missing:
            raise PluginError(f"plugin '{missing[0]}' is not installed (allow list)")

    for plugin in extra:
        if isinstance(plugin, types.ModuleType):
            name = module = plugin.__name__
        else:
            name = str(getattr(plugin, "name", None) or type(plugin).__name__)
            module = type(plugin).__module__
        _register(pm, name, plugin)
        infos[name] = PluginInfo(name, "(given)", "", module, False)

    try:
        pm.hook.cbs_addhooks.call_historic(kwargs={"pluginmanager": pm})
    except Exception as exc:
        raise PluginError(f"plugin hook specs failed: {type(exc).__name__}: {exc}") from exc
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"plugin check failed: {str(exc).splitlines()[0]}") from exc
    return pm, infos
