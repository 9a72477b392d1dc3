"""Hooks that cbs-jetstream adds (through ``cbs_addhooks``) for other plugins."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from cbs.kernel import Body

hookspec = pluggy.HookspecMarker("cbs")


@hookspec
def cbs_jetstream_dead_lettered(
    body: Body, subject: str, envelope_id: str | None, error: dict[str, Any], deliveries: int
) -> None:
    """Notification: a durable request was stored in the dead letters.

    Called once per dead letter, after it is stored, with the request's
    subject, its envelope id (``None`` if it did not decode), the error object
    of the last reply (``{"code", "message", ...}``) and how often it was
    delivered. Not called per message otherwise. Plain function only (it is
    called from the delivery path: keep it short; exceptions are logged).
    Returns nothing.
    """
