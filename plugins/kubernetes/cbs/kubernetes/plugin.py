"""Entry point ``kubernetes``: the command ``deploy`` (``cbs deploy render``).
Only hook implementations live here."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cbs.kernel import hookimpl

if TYPE_CHECKING:
    from cbs.kernel import CommandRegistry


@hookimpl
def cbs_add_commands(commands: CommandRegistry) -> None:
    from cbs.kubernetes import commands as k8s_commands

    commands.add(
        "deploy",
        help="deploy render SPEC: the Kubernetes manifests of a body spec (the Helm chart"
        " deploy/helm/cbs with values from body.yaml)",
        run=k8s_commands.run_deploy,
        configure=k8s_commands.configure_deploy,
    )
