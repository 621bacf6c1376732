"""``ekm-async run --config``: the example config, as a new user runs it, polls, stores and serves in one
process and stops on SIGTERM with every read committed."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sqlite3
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import trustme

from ekm_async.config import example

from .test_web import started

GUARD = 60.0


@contextlib.asynccontextmanager
async def running(
    config: Path, env: dict[str, str] | None = None
) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    """``ekm-async run --config CONFIG`` and the URL it serves at (killed at the end if still running)."""
    first = r"running .*, serving (https?://127\.0\.0\.1:\d+/) \((writes need a token|no token: writes refused)\)\n"
    async with started(["run", "--config", config.name], first, cwd=config.parent, env=env) as (process, url):
        yield process, url


def stored(path: Path) -> dict[str, int]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return dict(db.execute("SELECT Meter_Address, count(*) FROM reads GROUP BY Meter_Address").fetchall())


async def test_the_example_config_polls_stores_and_serves_until_sigterm(tmp_path: Path) -> None:
    config = tmp_path / "ekm.toml"
    config.write_text(example().replace("port = 8080", "port = 0", 1))  # as it is, but on a free port
    async with running(config) as (process, url), aiohttp.ClientSession(base_url=url) as http:
        addresses = {"000300001184", "000300001185", "000000001234"}
        async with asyncio.timeout(GUARD):
            while True:
                async with http.get("/api/meters") as response:
                    assert response.status == 200
                    body = await response.json()
                if {m["address"] for m in body["meters"] if m["ok"]} == addresses:
                    break
                await asyncio.sleep(0.2)
        assert {m["bus"] for m in body["meters"]} == {"bus1"}
        assert "url" not in body["buses"]["bus1"]  # no token given: where the bus is stays private
        assert "path" not in body["store"]
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(GUARD):
            code = await process.wait()
            stderr = (await process.stderr.read()).decode()  # type: ignore[union-attr]
    assert code == 0, stderr
    counts = stored(tmp_path / "ekm.db")
    assert set(counts) == addresses
    assert sum(counts.values()) >= 3


@pytest.mark.parametrize("source", ["file", "env"])
async def test_meter_passwords_reach_the_meters_from_a_file_or_the_environment(tmp_path: Path, source: str) -> None:
    """The simulated meters of a config have the configured passwords: a write through the web service
    (with the token) is acknowledged only if the password reached the meter handle."""
    (tmp_path / "token").write_text("tok\n")
    (tmp_path / "pw").write_text("24681357\n")
    secret = 'password_file = "pw"' if source == "file" else 'password_env = "EKM_TEST_PW"'
    config = tmp_path / "ekm.toml"
    config.write_text(
        f'[web]\nport = 0\ntoken_file = "token"\n[[bus]]\nurl = "simulate"\ninterval = 1\n'
        f'[[bus.meter]]\naddress = "000300001184"\n{secret}\n'
    )
    env = {"EKM_TEST_PW": "24681357"}
    async with (
        running(config, env) as (process, url),
        aiohttp.ClientSession(base_url=url, headers={"Authorization": "Bearer tok"}) as http,
    ):
        async with asyncio.timeout(GUARD):
            async with http.post("/api/meters/000300001184/relay", json={"relay": 1, "state": "close"}) as response:
                assert response.status == 200, await response.text()
            async with http.get("/api/meters") as response:
                body = await response.json()
        assert body["buses"]["bus1"]["url"] == "sim://memory"  # with the token: the bus's URL
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(GUARD):
            assert await process.wait() == 0
            stderr = (await process.stderr.read()).decode()  # type: ignore[union-attr]
    # The audit trail on stderr: who wrote what to which meter, and the outcome; the password nowhere.
    assert (
        "audit: write relay(relay=1, state='close') to meter 000300001184 by web token from 127.0.0.1: ok\n" in stderr
    )
    assert "24681357" not in stderr


async def test_the_web_service_serves_https_with_the_configured_certificate(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    config = tmp_path / "ekm.toml"
    config.write_text(
        '[web]\nport = 0\ntls_cert = "cert.pem"\ntls_key = "key.pem"\n'
        '[[bus]]\nurl = "simulate"\n[[bus.meter]]\naddress = "000300001184"\n'
    )
    client = ssl.create_default_context()
    ca.configure_trust(client)
    async with running(config) as (process, url), aiohttp.ClientSession() as http:
        assert url.startswith("https://127.0.0.1:")
        async with asyncio.timeout(GUARD):
            async with http.get(url + "api/meters", ssl=client) as response:
                assert response.status == 200
            with pytest.raises(aiohttp.ClientError):  # the system's CAs do not know this one
                async with http.get(url + "api/meters") as response:
                    pass
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(GUARD):
            assert await process.wait() == 0
