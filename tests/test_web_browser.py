"""The live page in a real browser: ``ekm-async serve --simulate 2`` in headless Chromium shows values that change.

Chromium is the system one (Debian's ``chromium``, installed by .ci/run), driven over the DevTools protocol by
the machinery of scripts/screenshot.py (which also makes docs/serve.png). No Chromium is a failure, not a skip.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import re
import struct
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
ADDRESSES = ("000300001184", "000300001185")  # the first two simulated meters


def _screenshot_module() -> ModuleType:
    name = "ekm_screenshot_script"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / "screenshot.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


shots = _screenshot_module()

# What each meter card shows, by address: the ids index.html gives its elements.
SNAPSHOT = (
    "Object.fromEntries("
    + json.dumps(ADDRESSES)
    + ".map(a => [a, Object.fromEntries(['power', 'volts', 'energy', 'time', 'ok', 'errors']"
    + ".map(k => [k, document.getElementById(`${k}-${a}`)?.textContent ?? null]))]))"
)


def _shown(snapshot: dict[str, dict[str, Any]]) -> bool:
    return all(snapshot[a]["power"] not in (None, "–") for a in ADDRESSES)


def _changed(before: dict[str, dict[str, Any]], now: dict[str, dict[str, Any]]) -> bool:
    return all(
        int(now[a]["ok"]) > int(before[a]["ok"])
        and now[a]["time"] != before[a]["time"]
        and now[a]["power"] != before[a]["power"]
        for a in ADDRESSES
    )


async def _check_page(tmp_path: Path) -> Path:
    serve_args = ["--simulate", "2", "--sim-baud", "0", "--interval", "0.3"]
    async with shots.serve(serve_args, stderr=tmp_path / "serve.err") as url, shots.chromium(timeout=45) as browser:
        page = await browser.new_page(1200, 800)
        await page.navigate(url)

        first = await page.wait_for(
            f"(s => Object.values(s).every(m => m.power && m.power !== '–') && s)({SNAPSHOT})",
            timeout=10,
            what="both meters to show a power value",
        )
        assert _shown(first), first
        assert all(first[a]["time"] != "never" for a in ADDRESSES), first

        # New reads arrive over the event stream: the read count grows, the time and the power move on.
        now = first
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while not _changed(first, now):
            assert loop.time() < deadline, f"the page did not change in 10 s:\nfirst {first}\nnow   {now}"
            await asyncio.sleep(0.2)
            now = await page.evaluate(SNAPSHOT)

        assert all(now[a]["errors"] == "0" for a in ADDRESSES), now
        assert all(now[a]["volts"].endswith(" V") and now[a]["energy"] not in (None, "–") for a in ADDRESSES), now
        assert all(re.fullmatch(r"\d+\.\d\d", now[a]["energy"]) for a in ADDRESSES), now  # two decimals, kept
        status = await page.evaluate("(s => [s.className, s.textContent])(document.getElementById('status'))")
        assert status == ["live", "live"]
        lines = await page.evaluate("document.querySelectorAll('#chart polyline').length")
        assert lines == len(ADDRESSES)
        meters = await page.evaluate("document.querySelectorAll('#meters .meter').length")
        assert meters == len(ADDRESSES)

        png = tmp_path / "serve.png"
        await page.screenshot(png)
        return png


@pytest.mark.timeout(150)
async def test_page_shows_live_values(tmp_path: Path) -> None:
    try:
        shots.find_chromium()
    except FileNotFoundError as exc:
        pytest.fail(f"the browser test needs Chromium: {exc}")
    # Generous: Chromium's first start on a loaded CI machine has taken over 15 s (a limit, not a speed test).
    async with asyncio.timeout(100):  # cancels cleanly: serve and Chromium are stopped on the way out
        png = await _check_page(tmp_path)

    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])  # IHDR comes first
    assert (width, height) == (1200, 800)
    assert 10_000 < len(data) < 5_000_000
