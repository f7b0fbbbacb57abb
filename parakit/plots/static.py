"""Static copies of figures: an SVG drawn by kaleido in a headless Chrome or Chromium that is
already on the machine (never downloaded). A notebook output that carries it beside plotly's
JSON shows the figure where plotly.js does not run: GitHub, nbviewer, nbconvert's HTML.

One browser serves the whole process. It starts on the first figure shown in a notebook (~3 s
on a 2-core machine), then each figure costs ~0.2-0.4 s; it is closed at exit. Where there is
no browser, kaleido fails, or ``PARAKIT_STATIC_FIGURES=0`` is set, figures have no copy: one
warning per process says why (none when the user switched copies off), never a traceback.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import shutil
import threading
import warnings
from typing import Any

SWITCH = "PARAKIT_STATIC_FIGURES"
SVG = "image/svg+xml"
DEFAULT_WIDTH_PX, DEFAULT_HEIGHT_PX = 700, 450  # ~10-80 KB of SVG per figure
BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
START_TIMEOUT_S = 60.0  # a cold Chromium on a busy 2-core machine takes several seconds
RENDER_TIMEOUT_S = 30.0


def enabled() -> bool:
    """False where the user switched static copies off (``PARAKIT_STATIC_FIGURES=0``)."""
    return os.environ.get(SWITCH, "1").strip().lower() not in {"0", "false", "no", "off"}


def find_browser() -> str | None:
    """``BROWSER_PATH``, else a Chromium or Chrome on PATH (Debian's ``/usr/bin/chromium``),
    else wherever choreographer looks (macOS/Windows install folders, a copy fetched earlier
    with ``kaleido_get_chrome``). Only looks; nothing is downloaded."""
    if path := os.environ.get("BROWSER_PATH"):
        return path  # the user's choice; if it is wrong, kaleido's error says so in the warning
    for name in BROWSER_NAMES:
        if path := shutil.which(name):
            return path
    try:
        from choreographer.browsers.chromium import Chromium

        return Chromium.find_browser(skip_local=False)
    except Exception:  # noqa: BLE001 - best effort: no choreographer, or an odd platform
        return None


class _Browser:
    """kaleido's browser on an event loop of its own thread: a notebook kernel already runs a
    loop in the main thread, where kaleido's coroutines cannot be awaited synchronously.

    Not kaleido's ``start_sync_server``: when Chrome fails to start in its thread, every later
    call waits forever on a queue, and a notebook would hang on its first figure."""

    def __init__(self, path: str) -> None:
        import kaleido  # here, not at import: its import costs time and a figure may never show

        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="parakit-static-figures", daemon=True).start()
        self.kaleido = None

        async def open_browser():
            # mathjax=False: kaleido would fetch MathJax from a CDN; these figures have no LaTeX.
            # plotly.js comes from the installed plotly package, so no network is needed.
            browser = kaleido.Kaleido(path=path, mathjax=False, timeout=RENDER_TIMEOUT_S)
            await browser.open()
            return browser

        try:
            self.kaleido = self._wait(open_browser(), START_TIMEOUT_S)
        except BaseException:
            self.loop.call_soon_threadsafe(self.loop.stop)
            raise
        atexit.register(self.close)

    def _wait(self, coroutine: Any, timeout_s: float) -> Any:
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        try:
            return future.result(timeout_s)
        except BaseException:
            future.cancel()
            raise

    def svg(self, figure: dict, width_px: int, height_px: int) -> str:
        opts = {"format": "svg", "width": width_px, "height": height_px}
        # kaleido times the render out itself; the margin covers handing the result back
        return self._wait(self.kaleido.calc_fig(figure, opts), RENDER_TIMEOUT_S + 5).decode()

    def close(self) -> None:
        if self.kaleido is not None:
            try:
                self._wait(self.kaleido.close(), 10)
            except Exception:  # noqa: BLE001 - at exit, a browser already gone is fine
                pass
            self.kaleido = None
        self.loop.call_soon_threadsafe(self.loop.stop)


_lock = threading.Lock()  # one render at a time, and one browser start
_browser: _Browser | None = None
_off_because: str | None = None  # why this process has no static copies; None while it may


def svg_of(figure: Any) -> str | None:
    """The figure as SVG text at its own width and height (700x450 px where it sets none), or
    None where there is no copy (switched off, no browser, kaleido failed)."""
    global _browser
    if not enabled():
        return None
    with _lock:
        if _off_because is not None:
            return None
        try:
            if _browser is None:
                path = find_browser()
                if path is None:
                    _turn_off("no Chrome or Chromium found")
                    return None
                _browser = _Browser(path)
            layout = figure.layout
            return _browser.svg(figure.to_dict(), layout.width or DEFAULT_WIDTH_PX,
                                layout.height or DEFAULT_HEIGHT_PX)
        except Exception as e:  # noqa: BLE001 - a missing copy must never break the output
            if _browser is not None:
                _browser.close()
                _browser = None
            # the first sentence: kaleido's next ones suggest downloading a Chrome
            reason = (str(e).strip().splitlines() or [""])[0].split(". ")[0]
            _turn_off(f"kaleido failed: {type(e).__name__}: {reason}"[:300])
            return None


def _turn_off(reason: str) -> None:
    """No more attempts in this process (each would cost a browser start or a timeout), and the
    one warning that says so."""
    global _off_because
    _off_because = reason
    warnings.warn(f"parakit: figures carry no static SVG copy ({reason}), so a saved notebook "
                  "shows them only where plotly.js runs, not on GitHub or in nbconvert's HTML; "
                  "install Chromium or Chrome (or set BROWSER_PATH to one) and restart the "
                  f"kernel, or set {SWITCH}=0 to silence this.", UserWarning, stacklevel=3)
