"""The MQTT bridge as a deployment needs it, against a real mosquitto: TLS with a CA the test makes
(trustme), a client certificate, a login; relay commands off unless asked for, retained commands
ignored, commands limited per meter and checked as the web service checks bodies.

The broker has two listeners: the bridge's — TLS, certificate required, no anonymous login — and a
plain anonymous one on loopback for the test's subscriber, which watches what the bridge publishes
and plays the part of whoever else can publish to the broker."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

from ekm_async import Bus, Poller
from ekm_async.mqtt import COMMAND_BURST, MqttBridge
from ekm_async.sim import MeterModel, RequestKind, SimBus, Transaction
from ekm_async.testing.pytest_plugin import SimulatedBus

from .test_mqtt import GUARD, Broker, Subscriber, X, free_port, running, subscriber, until

USER, PASSWORD = "ekm", "correct horse"
pytestmark = pytest.mark.ekm_sim(meters=[f"v4:{X}"])
"""The simulated bus of every test (ekm_async.testing's fixtures): one V4 meter."""


@dataclass
class Tls:
    ca: Path
    client_cert: Path
    client_key: Path
    other_ca: Path
    """A CA that signed nothing the broker shows."""


class SecureBroker(Broker):
    """mosquitto with a TLS listener (certificate and login required) and a plain one for the test."""

    def __init__(self, directory: Path, tls: Tls) -> None:
        super().__init__(directory)
        self.tls_port = free_port()
        ca = trustme.CA()
        server = ca.issue_cert("127.0.0.1", "localhost")
        ca.cert_pem.write_to_path(str(tls.ca))
        server.cert_chain_pems[0].write_to_path(str(directory / "server.pem"))
        server.private_key_pem.write_to_path(str(directory / "server.key"))
        client = ca.issue_cert("ekm-async-client")
        client.cert_chain_pems[0].write_to_path(str(tls.client_cert))
        client.private_key_pem.write_to_path(str(tls.client_key))
        trustme.CA().cert_pem.write_to_path(str(tls.other_ca))
        passwords = directory / "passwd"
        passwords.write_text("")
        subprocess.run(["mosquitto_passwd", "-b", str(passwords), USER, PASSWORD], check=True, capture_output=True)
        self.config.write_text(
            # Started as root, mosquitto would become the user "mosquitto", who cannot read the test's files.
            "per_listener_settings true\npersistence false\nuser root\n"
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
            f"listener {self.tls_port} 127.0.0.1\nallow_anonymous false\npassword_file {passwords}\n"
            f"cafile {tls.ca}\ncertfile {directory / 'server.pem'}\nkeyfile {directory / 'server.key'}\n"
            "require_certificate true\n"
        )

    @property
    def tls_url(self) -> str:
        return f"mqtts://127.0.0.1:{self.tls_port}"


@pytest.fixture
def tls(tmp_path: Path) -> Tls:
    return Tls(tmp_path / "ca.pem", tmp_path / "client.pem", tmp_path / "client.key", tmp_path / "other-ca.pem")


@pytest.fixture
def secure(tmp_path: Path, tls: Tls) -> Iterator[SecureBroker]:
    b = SecureBroker(tmp_path, tls)
    b.start()
    try:
        yield b
    finally:
        b.stop(signal.SIGKILL)


def bridge(poller: Poller, broker: SecureBroker, tls: Tls, **kw: object) -> MqttBridge:
    options: dict[str, object] = {
        "username": USER,
        "password": PASSWORD,
        "ca_file": tls.ca,
        "client_cert": tls.client_cert,
        "client_key": tls.client_key,
        "reconnect_delay": 0.2,
        "reconnect_max": 0.2,
    }
    return MqttBridge(poller, broker.tls_url, **(options | kw))  # type: ignore[arg-type]


async def test_states_go_over_tls_with_a_client_certificate_and_a_login(
    secure: SecureBroker, tls: Tls, ekm_bus: Bus
) -> None:
    async with asyncio.timeout(GUARD), contextlib.nullcontext(ekm_bus) as bus, subscriber(secure) as sub:
        poller = Poller([bus.v4(X)], interval=0.05)
        async with running(bridge(poller, secure, tls)) as b, poller:
            await until(lambda: len(sub.states(X)) >= 2, "states over TLS", bridge=b)
            assert b.tls
            assert b.port == secure.tls_port
        assert sub.states(X)[0].json()["Meter_Address"] == X


@pytest.mark.parametrize(
    ("change", "said"),
    [
        ({"password": "wrong"}, "not authori"),  # paho: "Not authorized" (v3.1.1 return code 5)
        ({"ca_file": "other"}, "certificate verify failed"),
    ],
    ids=["wrong password", "broker not signed by the CA given"],
)
async def test_a_wrong_login_or_ca_never_connects(
    secure: SecureBroker, tls: Tls, change: dict[str, str], said: str, *, ekm_bus: Bus
) -> None:
    options: dict[str, object] = dict(change)
    if change.get("ca_file") == "other":
        options["ca_file"] = tls.other_ca
    async with asyncio.timeout(GUARD), contextlib.nullcontext(ekm_bus) as bus, subscriber(secure) as sub:
        poller = Poller([bus.v4(X)], interval=0.05)
        async with running(bridge(poller, secure, tls, **options)) as b, poller:
            await until(lambda: b.last_error != "", "a failed connection", bridge=b)
            await asyncio.sleep(0.3)  # and the attempts after it
            assert b.connects == 0
            assert said in b.last_error.lower()
        assert not sub.states(X)


@dataclass
class Commanded:
    bridge: MqttBridge
    sub: Subscriber
    model: MeterModel
    sim: SimBus

    def writes(self) -> list[Transaction]:
        """The writes that reached the simulated wire."""
        return [t for t in self.sim.transactions if t.request.kind is RequestKind.WRITE]

    def relays(self) -> list[bool]:
        return [r.closed for r in self.model.relays]

    async def states_after(self, n: int) -> None:
        """Until ``n`` more states of X have come (reads made after whatever was published before)."""
        seen = len(self.sub.states(X))
        await until(lambda: len(self.sub.states(X)) >= seen + n, f"{n} more states", bridge=self.bridge)


@contextlib.asynccontextmanager
async def commanded(
    secure: SecureBroker, tls: Tls, ekm_sim: SimulatedBus, ekm_bus: Bus, **kw: object
) -> AsyncIterator[Commanded]:
    """The V4 meter of ``ekm_sim`` polled and published through the secure listener, with the test's
    subscriber."""
    async with subscriber(secure) as sub:
        poller = Poller([ekm_bus.v4(X)], interval=0.05)
        async with running(bridge(poller, secure, tls, **kw)) as b, poller:
            await until(lambda: bool(sub.states(X)), "a state", bridge=b)
            yield Commanded(b, sub, ekm_sim.model(X), ekm_sim.sim)


async def test_commands_are_off_unless_asked_for(
    secure: SecureBroker, tls: Tls, ekm_sim: SimulatedBus, ekm_bus: Bus
) -> None:
    """Anyone who may publish to the broker sends ON: without ``commands=True`` the relay stays open and
    no result comes — the bridge does not even subscribe."""
    async with asyncio.timeout(GUARD), commanded(secure, tls, ekm_sim, ekm_bus) as c:
        assert not c.bridge.commands
        await c.sub.client.publish(f"ekm/{X}/relay/1/set", "ON", qos=1)
        await c.states_after(3)
        assert not c.sub.on(f"ekm/{X}/relay/1/result")
        assert c.relays() == [False, False]
        assert not c.writes()


async def test_a_retained_command_is_ignored_and_a_live_one_carried_out(
    secure: SecureBroker, tls: Tls, caplog: pytest.LogCaptureFixture, *, ekm_sim: SimulatedBus, ekm_bus: Bus
) -> None:
    """A command left retained on the broker (by mistake or by an attacker) would fire again at every
    reconnect: the bridge ignores it. A command sent while it listens is carried out."""
    async with asyncio.timeout(GUARD), subscriber(secure) as setter:
        await setter.client.publish(f"ekm/{X}/relay/1/set", "ON", qos=1, retain=True)
        async with commanded(secure, tls, ekm_sim, ekm_bus, commands=True) as c:
            await c.states_after(3)
            assert f"retained relay command on ekm/{X}/relay/1/set ignored" in caplog.messages
            assert not c.sub.on(f"ekm/{X}/relay/1/result")
            assert c.relays() == [False, False]
            result = f"ekm/{X}/relay/2/result"
            await c.sub.client.publish(f"ekm/{X}/relay/2/set", "ON", qos=1)
            await until(lambda: bool(c.sub.on(result)), "the live command's result", bridge=c.bridge)
            assert c.sub.on(result)[0].json() == {"ok": True, "state": "close"}
            assert c.relays() == [False, True]
            assert len(c.writes()) == 1


async def test_a_command_flood_is_refused_beyond_the_burst_and_never_queued(
    secure: SecureBroker, tls: Tls, ekm_sim: SimulatedBus, ekm_bus: Bus
) -> None:
    flood = 12
    async with asyncio.timeout(GUARD), commanded(secure, tls, ekm_sim, ekm_bus, commands=True) as c:
        topic = f"ekm/{X}/relay/1/set"
        for n in range(flood):
            await c.sub.client.publish(topic, "ON" if n % 2 else "OFF", qos=1)
        results = f"ekm/{X}/relay/1/result"
        await until(lambda: len(c.sub.on(results)) == flood, "a result for every command", bridge=c.bridge)
        outcomes = [m.json() for m in c.sub.on(results)]
        done = [o for o in outcomes if o["ok"]]
        refused = [o for o in outcomes if not o["ok"]]
        assert 1 <= len(done) <= COMMAND_BURST
        assert len(refused) == flood - len(done) == c.bridge.commands_refused
        assert all("relay command" in o["error"] for o in refused)
        assert len(c.writes()) == len(done)


@pytest.mark.parametrize(
    ("payload", "said"),
    [
        ("BANANA", "the payload 'BANANA' is not a command: send ON, OFF or a JSON object like {"),
        ('{"state": "close", "seconds": "soon"}', "seconds"),
        ("[" * 50 + "]" * 50, "is not a command"),
        ('{"state": ' + "[" * 50 + "]" * 50 + "}", "nested deeper than 8 levels"),
        ('{"state": "close", "relay": 2}', "the topic is relay 1's, the payload says relay 2"),
        (b"\xff\xfe", "the payload is not UTF-8 text"),
    ],
)
async def test_a_bad_command_payload_is_answered_in_words_and_sends_nothing(
    secure: SecureBroker, tls: Tls, payload: str | bytes, said: str, *, ekm_sim: SimulatedBus, ekm_bus: Bus
) -> None:
    async with asyncio.timeout(GUARD), commanded(secure, tls, ekm_sim, ekm_bus, commands=True) as c:
        await c.sub.client.publish(f"ekm/{X}/relay/1/set", payload, qos=1)
        results = f"ekm/{X}/relay/1/result"
        await until(lambda: bool(c.sub.on(results)), "a result", bridge=c.bridge)
        outcome = c.sub.on(results)[0].json()
        assert outcome["ok"] is False
        assert said in outcome["error"]
        assert not c.writes()
        assert c.relays() == [False, False]


@pytest.mark.parametrize(
    ("topic", "said"),
    [
        (f"ekm/{X}/relay/one/set", "relay must be a whole number; got 'one'"),
        (f"ekm/{X}/relay/3/set", "relay"),
        (f"ekm/{X}/relay/-1/set", "relay"),
        ("ekm/000300009999/relay/1/set", "000300009999"),
        ("ekm/not-a-meter/relay/1/set", "not-a-meter"),
    ],
)
async def test_a_hostile_command_topic_is_answered_in_words_and_sends_nothing(
    secure: SecureBroker, tls: Tls, topic: str, said: str, *, ekm_sim: SimulatedBus, ekm_bus: Bus
) -> None:
    async with asyncio.timeout(GUARD), commanded(secure, tls, ekm_sim, ekm_bus, commands=True) as c:
        await c.sub.client.publish(topic, "ON", qos=1)
        results = topic.removesuffix("/set") + "/result"
        await until(lambda: bool(c.sub.on(results)), "a result", bridge=c.bridge)
        outcome = c.sub.on(results)[0].json()
        assert outcome["ok"] is False
        assert said in outcome["error"]
        assert not c.writes()
