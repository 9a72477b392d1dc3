"""The pytest plugin of the testing kit, registered through the ``pytest11``
entry point ``cbs`` of ``cell-body-system``: fixtures only, opt-in by name,
nothing autouse. Documented in :mod:`cbs.testing`.

It imports neither the kernel nor pytest-asyncio eagerly, so a test suite that
has the core installed but uses none of this, or lacks pytest-asyncio, runs as
before; only ``make_body`` needs pytest-asyncio and fails with the reason.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar, cast

import pytest

if TYPE_CHECKING:
    from cbs.kernel.body import Body
    from cbs.testing import HookRecorder, MakeBody

_F = TypeVar("_F", bound=Callable[..., Any])

_INSTALL_TESTING = "pip install 'cell-body-system[testing]'"


def _async_fixture(func: _F) -> _F:
    """``pytest_asyncio.fixture`` when pytest-asyncio is installed; otherwise a
    fixture of the same name that fails with a one-line reason."""
    try:
        import pytest_asyncio
    except ImportError:
        name = func.__name__

        def missing() -> NoReturn:
            reason = f"the {name} fixture needs pytest-asyncio: {_INSTALL_TESTING}"
            pytest.fail(reason, pytrace=False)

        return cast(_F, pytest.fixture(name=name)(missing))
    return cast(_F, pytest_asyncio.fixture(func))


@pytest.fixture
def nats_server() -> Iterator[Any]:
    try:
        from cbs.nats.server import NatsServer
    except ImportError:
        pytest.skip("the nats_server fixture needs cbs-nats (pip install cbs-nats)")
    server = NatsServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def nats_cluster() -> Iterator[Any]:
    try:
        from cbs.nats.cluster import NatsCluster
    except ImportError:
        pytest.skip("the nats_cluster fixture needs cbs-nats (pip install cbs-nats)")
    cluster = NatsCluster(3).start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def hook_recorder() -> Iterator[HookRecorder]:
    from cbs.testing import HookRecorder

    recorder = HookRecorder()
    yield recorder
    recorder.close()


@_async_fixture
async def make_body() -> AsyncIterator[MakeBody]:
    from cbs.kernel.body import Body

    bodies: list[Body] = []

    def factory(
        *plugins: Any,
        config: Mapping[str, Any] | None = None,
        autoload: bool = False,
        environ: Mapping[str, str] | None = None,
    ) -> Body:
        environ = {} if environ is None else environ
        body = Body(config, plugins=plugins, autoload=autoload, environ=environ)
        bodies.append(body)
        return body

    yield factory
    for body in reversed(bodies):
        await body.stop()
