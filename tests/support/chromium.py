"""Headless Chromium (Debian's ``/usr/bin/chromium``) driven over the DevTools protocol with
aiohttp's websocket client: open a page, evaluate JavaScript in it, collect console errors and
uncaught exceptions, take a screenshot."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1"]


class Page:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.ids = itertools.count(1)
        self.pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.errors: list[str] = []
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            doc = msg.json()
            if "id" in doc and doc["id"] in self.pending:
                self.pending.pop(doc["id"]).set_result(doc)
            elif doc.get("method") == "Runtime.exceptionThrown":
                self.errors.append(str(doc["params"]["exceptionDetails"]))
            elif doc.get("method") == "Runtime.consoleAPICalled" and doc["params"]["type"] in ("error", "assert"):
                self.errors.append(str(doc["params"]["args"]))
            elif doc.get("method") == "Log.entryAdded" and doc["params"]["entry"]["level"] == "error":
                self.errors.append(str(doc["params"]["entry"]))

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        n = next(self.ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.pending[n] = fut
        await self.ws.send_json({"id": n, "method": method, "params": params})
        doc = await asyncio.wait_for(fut, 30)
        if "error" in doc:
            raise RuntimeError(f"{method}: {doc['error']}")
        return dict(doc.get("result", {}))

    async def evaluate(self, expression: str) -> Any:
        result = await self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        return result.get("result", {}).get("value")

    async def screenshot(self, path: Path, *, full_page: bool = False) -> Path:
        """A PNG of the viewport, or of the whole page (``full_page``: beyond the viewport too)."""
        clip: dict[str, Any] = {}
        if full_page:
            size = (await self.send("Page.getLayoutMetrics"))["cssContentSize"]
            clip = {"captureBeyondViewport": True,
                    "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}}
        shot = await self.send("Page.captureScreenshot", format="png", **clip)
        path.write_bytes(base64.b64decode(shot["data"]))
        return path


@contextlib.asynccontextmanager
async def open_page(url: str) -> AsyncIterator[Page]:
    """Chromium with ``url`` open; the page's console and exceptions are recorded from the start."""
    profile = Path(tempfile.mkdtemp(prefix="sfa-chromium-"))
    log = profile / "stderr.log"
    with log.open("wb") as err:  # a file, not a pipe: Chromium's chatter can never block it
        proc = subprocess.Popen(["/usr/bin/chromium", *FLAGS, f"--user-data-dir={profile / 'data'}",
                                 "about:blank"], stdout=subprocess.DEVNULL, stderr=err)
    try:
        endpoint = None
        deadline = time.monotonic() + 60
        while endpoint is None and time.monotonic() < deadline and proc.poll() is None:
            # "DevTools listening on ws://127.0.0.1:PORT/devtools/browser/…"
            found = re.search(r"DevTools listening on ws://([\d.]+:\d+)/", log.read_text(errors="replace"))
            endpoint = found.group(1) if found else None
            if endpoint is None:
                await asyncio.sleep(0.1)
        assert endpoint, f"chromium did not open its DevTools endpoint: {log.read_text(errors='replace')[-2000:]}"
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://{endpoint}/json/list") as res:
                target = next(t for t in await res.json() if t["type"] == "page")
            async with http.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=64 << 20) as ws:
                page = Page(ws)
                for domain in ("Runtime.enable", "Log.enable", "Page.enable"):
                    await page.send(domain)
                await page.send("Page.navigate", url=url)
                try:
                    yield page
                finally:
                    page.reader.cancel()
    finally:
        proc.kill()
        proc.wait(10)
        shutil.rmtree(profile, ignore_errors=True)
