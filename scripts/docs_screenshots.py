"""Screenshots of the Dagster UI for the docs (docs/img/), taken with a real headless Chromium.

A docs step, not a test. Start the example's UI with data first, e.g.::

    cd example_project && python -m example_project.dev --port 3344 --samples 200   # then apply (UI or CLI)
    python scripts/docs_screenshots.py --url http://127.0.0.1:3344 --out docs/img

It drives Chromium through the DevTools protocol (``--remote-debugging-port``; ``websockets`` comes with
Dagster): dismisses the first-visit dialog, hides the navigation, presses a page's button (the lineage depth
"All"), zooms out and saves one PNG per page. Chromium runs
headless with ``--no-sandbox`` (root in a container); Debian's package is ``chromium``.
"""

from __future__ import annotations

import argparse
import base64
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from websockets.sync.client import connect

#: (file, path in the UI, button to press once the page is drawn, zoom-out clicks) of every screenshot: the
#: lineage of a feature at depth "All" is the whole connected graph, migrations and features, groups open
PAGES = [
    ("asset-graph.png", "/assets/video/embeddings?view=lineage", "All", 1),
    ("feature-events.png", "/assets/video/embeddings?view=events", None, 0),
]

DISMISS = """(() => { for (const b of document.querySelectorAll('button'))
  if (['Skip', 'Dismiss', 'Close'].includes(b.textContent.trim())) b.click(); return true; })()"""
# Click the button labelled ...
PRESS = """(label => { for (const b of document.querySelectorAll('button'))
  if (b.textContent.trim() === label) { b.click(); return true; } return false; })"""
# The graph's zoom buttons: the right-most column of buttons, zoom in above zoom out.
ZOOM_BUTTONS = """(() => [...document.querySelectorAll('button')].map(b => b.getBoundingClientRect())
  .filter(r => r.x > window.innerWidth - 80 && r.y > window.innerHeight / 2)
  .map(r => [r.x + r.width / 2, r.y + r.height / 2]).sort((a, b) => a[1] - b[1]))()"""
HIDE_NAVIGATION = """(() => { for (const b of document.querySelectorAll('button, a'))
  if (b.textContent.trim() === 'Hide navigation') b.click();
  const jump = document.querySelector('input[placeholder^="Jump"]');
  const toggle = jump && jump.parentElement.parentElement.querySelector('button');
  if (toggle) toggle.click(); return true; })()"""


class Tab:
    def __init__(self, ws_url: str) -> None:
        self.ws = connect(ws_url, max_size=None)  # closed with the browser
        self.next_id = 0

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def evaluate(self, script: str) -> Any:
        return (
            self.call("Runtime.evaluate", expression=script, returnByValue=True)
            .get("result", {})
            .get("value")
        )

    def click(self, x: float, y: float) -> None:
        self.call("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y)
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)


def zoom(tab: Tab, clicks: int) -> None:
    """Zoom the graph out by ``clicks`` clicks on its zoom-out button (none on pages without a graph)."""
    buttons = tab.evaluate(ZOOM_BUTTONS) or []
    for _ in range(clicks if len(buttons) >= 2 else 0):
        tab.click(*buttons[1])
        time.sleep(0.4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:3344")
    parser.add_argument("--out", type=Path, default=Path("docs/img"))
    parser.add_argument("--width", type=int, default=1800)
    parser.add_argument("--height", type=int, default=1000)
    parser.add_argument("--port", type=int, default=9333)
    parser.add_argument("--wait", type=float, default=8.0, help="seconds for a page to draw")
    args = parser.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("FAILED: chromium is not installed; on Debian: apt-get install -y chromium")
    profile = tempfile.mkdtemp(prefix="metaxy-shots-")
    browser = subprocess.Popen(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--no-first-run",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            f"--remote-debugging-port={args.port}",
            f"--user-data-dir={profile}",
            f"--window-size={args.width},{args.height}",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(50):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{args.port}/json/list", timeout=5) as response:
                    pages = [t for t in json.loads(response.read()) if t["type"] == "page"]
                if pages:
                    break
            except OSError:
                pass
            time.sleep(0.2)
        tab = Tab(pages[0]["webSocketDebuggerUrl"])
        tab.call("Page.enable")
        tab.call(
            "Emulation.setDeviceMetricsOverride",
            width=args.width,
            height=args.height,
            deviceScaleFactor=1,
            mobile=False,
        )
        args.out.mkdir(parents=True, exist_ok=True)
        for name, path, button, zoom_out in PAGES:
            tab.call("Page.navigate", url=args.url.rstrip("/") + path)
            time.sleep(args.wait)
            tab.evaluate(DISMISS)
            tab.evaluate(HIDE_NAVIGATION)
            if button is not None:
                tab.evaluate(f"{PRESS}({json.dumps(button)})")
                time.sleep(args.wait)
            zoom(tab, zoom_out)
            time.sleep(args.wait / 2)
            shot = tab.call("Page.captureScreenshot", format="png")
            (args.out / name).write_bytes(base64.b64decode(shot["data"]))
            print(f"wrote {args.out / name}")
    finally:
        browser.terminate()
        browser.wait(timeout=30)
        shutil.rmtree(profile, ignore_errors=True)


if __name__ == "__main__":
    main()
