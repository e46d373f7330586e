"""Headless Chromium driven over the DevTools protocol (a WebSocket; no extra driver package): opens a page,
evaluates JavaScript in it. The microphone is a WAV file (Chromium's fake capture device)."""

from __future__ import annotations

import asyncio
import itertools
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Self

from websockets.asyncio.client import connect


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


class Browser:
    def __init__(self, url: str, microphone_wav: str | Path) -> None:
        self.profile = tempfile.TemporaryDirectory()
        self.process = subprocess.Popen(
            [chromium(), "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
             f"--use-file-for-fake-audio-capture={microphone_wav}%noloop", "--autoplay-policy=no-user-gesture-required",
             "--remote-debugging-port=0", f"--user-data-dir={self.profile.name}", url],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.ids = itertools.count(1)
        self.ws = None

    async def __aenter__(self) -> Self:
        port_file = Path(self.profile.name) / "DevToolsActivePort"
        until = time.monotonic() + 30
        while not port_file.is_file() or not port_file.read_text().strip():
            if time.monotonic() > until or self.process.poll() is not None:
                raise RuntimeError("Chromium did not start its DevTools endpoint")
            await asyncio.sleep(0.1)
        port = port_file.read_text().split()[0]
        targets = await asyncio.to_thread(lambda: json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list")))
        page = next(t for t in targets if t["type"] == "page")
        self.ws = await connect(page["webSocketDebuggerUrl"], max_size=None)
        return self

    async def __aexit__(self, *exc) -> None:
        if self.ws is not None:
            await self.ws.close()
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.profile.cleanup()

    async def call(self, method: str, **params) -> dict:
        """One DevTools protocol command's result."""
        call = next(self.ids)
        await self.ws.send(json.dumps({"id": call, "method": method, "params": params}))
        while True:
            reply = json.loads(await self.ws.recv())
            if reply.get("id") == call:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    async def evaluate(self, expression: str):
        """The value of a JavaScript expression in the page (promises awaited)."""
        result = await self.call("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def choose_file(self, selector: str, path: str | Path) -> None:
        """What a user picking ``path`` in the file input at ``selector`` does."""
        root = (await self.call("DOM.getDocument"))["root"]["nodeId"]
        node = (await self.call("DOM.querySelector", nodeId=root, selector=selector))["nodeId"]
        await self.call("DOM.setFileInputFiles", nodeId=node, files=[str(path)])

    async def wait_for(self, expression: str, timeout: float = 30.0):
        """Polls ``expression`` until it is true (errors count as false: the page may still be loading)."""
        until, error = time.monotonic() + timeout, None
        while True:
            try:
                value = await self.evaluate(expression)
            except RuntimeError as failed:
                value, error = None, failed
            if value:
                return value
            if time.monotonic() > until:
                raise TimeoutError(f"{expression} stayed false for {timeout} s (last error: {error})")
            await asyncio.sleep(0.2)
