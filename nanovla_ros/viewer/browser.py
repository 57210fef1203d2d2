"""A headless browser (Chromium, over the DevTools protocol) that opens the served viewer and takes screenshots:
for the viewer's test and the docs' pictures. Software WebGL (SwiftShader), so it needs no GPU."""
from __future__ import annotations

import base64
import json
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable

import numpy as np

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")


class BrowserError(RuntimeError):
    """No usable browser, or the page never showed what was waited for."""


def find_chromium() -> str | None:
    return next((path for name in CHROMIUM_NAMES if (path := shutil.which(name))), None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def screenshot_when(url: str, ready: Callable[[np.ndarray], bool], timeout_s: float = 90.0,
                    size: tuple[int, int] = (1600, 900), poll_s: float = 1.0, reply_timeout_s: float = 90.0,
                    open_after: Callable[[], bool] | None = None) -> np.ndarray:
    """Opens ``url`` in headless Chromium and returns the first screenshot (RGB, (H, W, 3)) for which ``ready`` is
    true, polling every ``poll_s``; BrowserError after ``timeout_s`` (the last screenshot is in the message's
    ``last`` attribute). ``reply_timeout_s``: how long one DevTools call may take (a screenshot of a page that
    renders 3D in software on a busy 2-core host takes tens of seconds). ``open_after``: the page is opened once this
    returns true (polled; e.g. once a live episode is over and the host is idle again)."""
    import cv2
    from websockets.sync.client import connect

    chromium = find_chromium()
    if chromium is None:
        raise BrowserError(f"no Chromium found ({', '.join(CHROMIUM_NAMES)}): apt-get install chromium")
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="nanovla_browser_") as profile:
        process = subprocess.Popen(
            [chromium, "--headless=new", "--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
             f"--window-size={size[0]},{size[1]}", f"--remote-debugging-port={port}", f"--user-data-dir={profile}",
             "--no-first-run", "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + timeout_s
            page = None
            while page is None:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise BrowserError(f"Chromium did not start (exit code {process.poll()})")
                try:
                    targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=2).read())
                    page = next((t for t in targets if t.get("type") == "page"), None)
                except OSError:
                    pass
                if page is None:
                    time.sleep(0.2)
            with connect(page["webSocketDebuggerUrl"], max_size=None) as ws:
                counter = [0]

                def call(method: str, **params) -> dict:
                    counter[0] += 1
                    ws.send(json.dumps({"id": counter[0], "method": method, "params": params}))
                    while True:
                        reply = json.loads(ws.recv(timeout=reply_timeout_s))
                        if reply.get("id") == counter[0]:
                            if "error" in reply:
                                raise BrowserError(f"{method}: {reply['error']}")
                            return reply["result"]

                while open_after is not None and not open_after():
                    if time.monotonic() > deadline:
                        raise BrowserError("open_after never became true")
                    time.sleep(poll_s)
                call("Page.navigate", url=url)
                image = None
                while time.monotonic() < deadline:
                    time.sleep(poll_s)
                    png = base64.b64decode(call("Page.captureScreenshot", format="png")["data"])
                    image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
                    if ready(image):
                        return image
                error = BrowserError(f"{url} did not show what was waited for within {timeout_s:g} s")
                error.last = image
                raise error
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
