"""cbs-metrics: the status page renders in a real headless browser (Chromium,
from the OS packages; .ci/run installs it) and shows the demo cells."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import pytest

from cbs.contracts import BadRequest
from cbs.greeter import plugin as greeter_plugin
from cbs.metrics import plugin as metrics_plugin
from cbs.metrics.plugin import server_url
from cbs.nats import plugin as nats_plugin

BROWSER = next(
    (found for name in ("chromium", "chromium-browser") if (found := shutil.which(name))), None
)


async def headless(*args: str, profile: Path, seconds: float = 90) -> str:
    """Run Chromium headless and return its stdout; stopped by pid on a timeout."""
    assert BROWSER is not None
    proc = await asyncio.create_subprocess_exec(
        BROWSER,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), seconds)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
    return out.decode()


@pytest.mark.skipif(BROWSER is None, reason="chromium is not installed (apt-get install chromium)")
async def test_status_page_in_a_browser(nats_server: Any, make_body: Any, tmp_path: Path) -> None:
    config = {"nats_url": nats_server.url, "metrics_port": 0}
    body = make_body(nats_plugin, greeter_plugin, metrics_plugin, config=config)
    await body.start()
    for name in ("Ada", "Grace", "Alan"):
        await body.request("greeter", "say_hello", {"name": name})
    with pytest.raises(BadRequest):
        await body.request("greeter", "say_hello", {})
    url = server_url(body)
    assert url is not None

    dom = await headless("--dump-dom", url, profile=tmp_path / "profile")
    assert "<h1>CBS body</h1>" in dom
    assert "ready" in dom and "transport nats (connected)" in dom
    for cell, subject in (
        ("prompt_name", "cbs.prompt_name.read"),
        ("greet", "cbs.greeter.say_hello"),
        ("print_greeting", "cbs.printer.write"),
    ):
        assert f'<tr id="cell-{cell}">' in dom, dom
        assert f"<code>{subject}</code>" in dom
    greet_row = dom.split('<tr id="cell-greet">')[1].split("</tr>")[0]
    assert '<td class="num">4</td>' in greet_row  # requests
    assert "BadRequest 1" in greet_row  # errors by code

    shot = tmp_path / "status.png"
    await headless(
        f"--screenshot={shot}", "--window-size=1200,800", url, profile=tmp_path / "profile"
    )
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
