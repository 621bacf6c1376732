"""The MQTT bridge against a real broker (issue 7): mosquitto from Debian, started by the tests on a
loopback port (``.ci/run`` installs it), simulated meters on an in-memory bus, and an aiomqtt client
subscribed to ``#`` that keeps every message it is sent.

The subscriber speaks MQTT v5 and subscribes with *retain as published*, so the retain flag of every
message it gets is the one the bridge published with (MQTT 3.1.1 clears it on live delivery).

Broker restarts: a broker started with ``persistence false`` comes back empty, so a subscriber must be
connected to the new broker before the bridge reconnects, or it would miss what the bridge flushes
first. While the broker is down a :class:`Gatekeeper` holds its port: it answers every MQTT connect
with "server unavailable", so each reconnection attempt of the bridge is seen, and fails at once. The
broker is started again right after an attempt: the bridge's next one is ``reconnect_delay`` away,
ample time for the test's subscriber to connect first (each test checks that it did).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import aiomqtt
import pytest
from paho.mqtt.subscribeoptions import SubscribeOptions

from ekm_async import Bus, Poller, Read
from ekm_async.cli import main
from ekm_async.mqtt import SENSORS, MqttBridge
from ekm_async.poller import BaseObserver
from ekm_async.sim import MeterModel, MeterType
from ekm_async.testing.pytest_plugin import SimulatedBus

GUARD = 30.0
"""Seconds after which a test is hung."""
MOSQUITTO = shutil.which("mosquitto") or next(
    (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).exists()), None
)
X, Y = "000300007001", "000300007002"
"""A V4 and a V3 meter."""
pytestmark = pytest.mark.ekm_sim(meters=[f"v4:{X}", f"v3:{Y}"])
"""The simulated bus of the tests that take ekm_bus (ekm_async.testing's fixtures): those two meters."""
UNKNOWN = "000300007999"
_BIN = Path(sys.executable).parent
CLI = [str(_BIN / "ekm-async")] if (_BIN / "ekm-async").exists() else [sys.executable, "-m", "ekm_async"]
SIMULATED = [f"{300001184 + n:012d}" for n in range(2)]
"""The addresses ``--simulate 2`` polls."""
CONNACK_SERVER_UNAVAILABLE = b"\x20\x02\x00\x03"
"""MQTT 3.1.1 CONNACK, return code 3."""


# ---------------------------------------------------------------------------------------------------
# The broker


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Broker:
    """A mosquitto of its own on a free loopback port: anonymous, no persistence (a restart comes back
    empty), its log in ``directory``."""

    def __init__(self, directory: Path) -> None:
        if MOSQUITTO is None:
            pytest.fail("mosquitto not found (PATH, /usr/sbin): the MQTT tests need it; `apt-get install mosquitto`")
        self.port = free_port()
        self.config = directory / "mosquitto.conf"
        self.config.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
        self.log = directory / "mosquitto.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def _spawn(self) -> subprocess.Popen[bytes]:
        assert MOSQUITTO is not None
        assert self.process is None or self.process.poll() is not None, "mosquitto is running already"
        with self.log.open("ab") as log:
            self.process = subprocess.Popen([MOSQUITTO, "-c", str(self.config)], stdout=log, stderr=subprocess.STDOUT)
        return self.process

    def _check_alive(self, process: subprocess.Popen[bytes]) -> None:
        if process.poll() is not None:
            pytest.fail(f"mosquitto exited with {process.returncode}:\n{self.log.read_text()}")

    def start(self, timeout: float = 10.0) -> None:
        """Start mosquitto and wait until it accepts connections."""
        process, deadline = self._spawn(), time.monotonic() + timeout
        while True:
            self._check_alive(process)
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"mosquitto does not accept connections on {self.port}:\n{self.log.read_text()}")
                time.sleep(0.01)
            else:
                return

    async def restart(self, timeout: float = 10.0) -> None:
        """:meth:`start`, without blocking the event loop."""
        process, deadline = self._spawn(), time.monotonic() + timeout
        while True:
            self._check_alive(process)
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"mosquitto does not accept connections on {self.port}:\n{self.log.read_text()}")
                await asyncio.sleep(0.005)
            else:
                writer.close()
                return

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        """Signal mosquitto and wait until it is gone (its port is free again)."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(sig)
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = Broker(tmp_path)
    b.start()
    try:
        yield b
    finally:
        b.stop(signal.SIGKILL)


class Gatekeeper:
    """Holds a stopped broker's port: answers every MQTT connect with CONNACK "server unavailable" (so the
    client fails at once instead of waiting for a CONNACK) and notes the loop time of each attempt."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.attempts: list[float] = []
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Gatekeeper:
        self._server = await asyncio.start_server(self._refuse, "127.0.0.1", self.port)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._server is not None
        self._server.close()

    async def _refuse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.attempts.append(asyncio.get_running_loop().time())
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(reader.read(4096), 1.0)  # the CONNECT packet
            writer.write(CONNACK_SERVER_UNAVAILABLE)
            await writer.drain()
            await asyncio.sleep(0.1)
        except OSError:
            pass
        finally:
            writer.close()


# ---------------------------------------------------------------------------------------------------
# The subscriber


@dataclass(frozen=True)
class Msg:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    at: float
    """Loop time it arrived."""
    wall: datetime
    """Wall-clock time (UTC) it arrived."""

    def text(self) -> str:
        return self.payload.decode()

    def json(self) -> Any:
        return json.loads(self.payload)


@dataclass
class Subscriber:
    client: aiomqtt.Client
    messages: list[Msg]
    subscribed_at: float = 0.0

    def on(self, topic: str) -> list[Msg]:
        """The messages on ``topic`` (an exact topic, or a prefix ending in ``/``), in arrival order."""
        if topic.endswith("/"):
            return [m for m in self.messages if m.topic.startswith(topic)]
        return [m for m in self.messages if m.topic == topic]

    def states(self, address: str | None = None, prefix: str = "ekm") -> list[Msg]:
        pattern = re.compile(rf"{re.escape(prefix)}/({address or '[0-9]{12}'})/state")
        return [m for m in self.messages if pattern.fullmatch(m.topic)]

    def received(self) -> set[tuple[str, str]]:
        """(address, time) of every state it got."""
        return {(m.topic.split("/")[1], m.json()["time"]) for m in self.states()}


_clients = itertools.count(1)


@contextlib.asynccontextmanager
async def subscriber(broker: Broker, topic: str = "#") -> AsyncIterator[Subscriber]:
    """An MQTT v5 client subscribed to ``topic`` (QoS 1, retain as published) that keeps every message.

    Messages are taken where aiomqtt queues them (its ``queue_type``), not from ``client.messages``: that
    iterator gives up on what is still queued once the connection breaks, and the broker-restart tests
    must see everything the broker sent before it died."""
    messages: list[Msg] = []
    loop = asyncio.get_running_loop()

    class Tap(asyncio.Queue[aiomqtt.Message]):
        def put_nowait(self, item: aiomqtt.Message) -> None:
            payload = item.payload if isinstance(item.payload, bytes) else str(item.payload).encode()
            messages.append(Msg(str(item.topic), payload, item.qos, item.retain, loop.time(), datetime.now(UTC)))

    client = aiomqtt.Client(
        "127.0.0.1",
        broker.port,
        identifier=f"test-subscriber-{next(_clients)}",
        protocol=aiomqtt.ProtocolVersion.V5,
        queue_type=Tap,
        timeout=5,
    )

    async def watch() -> None:  # ends when the connection does (nothing is queued: Tap keeps it all)
        with contextlib.suppress(aiomqtt.MqttError):
            async for _ in client.messages:
                pass

    async with client:
        watcher = loop.create_task(watch())
        try:
            await client.subscribe(topic, options=SubscribeOptions(qos=1, retainAsPublished=True))
            yield Subscriber(client, messages, loop.time())
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher


# ---------------------------------------------------------------------------------------------------
# Meters, observers, waiting


def v4(address: str = X) -> MeterModel:
    return MeterModel(address, MeterType.V4)


def v3(address: str = Y) -> MeterModel:
    return MeterModel(address, MeterType.V3, seed=1)


@dataclass
class Recorder(BaseObserver):
    """Every read the poller made, in order (a second observer beside the bridge)."""

    reads: list[Read] = field(default_factory=list)

    async def on_read(self, read: Read) -> None:
        self.reads.append(read)

    def keys(self) -> list[tuple[str, str]]:
        return [key(read) for read in self.reads]


def key(read: Read) -> tuple[str, str]:
    assert read.time is not None
    return read.address, read.time.isoformat()


def crashed(bridge: MqttBridge) -> BaseException | None:
    """What ended the bridge's connection task, if it ended (it should run until ``aclose``)."""
    task = bridge._task
    if task is None or not task.done() or task.cancelled():
        return None
    return task.exception()


@contextlib.asynccontextmanager
async def running(bridge: MqttBridge) -> AsyncIterator[MqttBridge]:
    """``async with bridge``, except that when the test fails (e.g. :func:`until` reporting that the
    bridge's task died) the bridge is closed at once and what ``aclose`` re-raises from a dead task does
    not hide the test's own report."""
    await bridge.start()
    try:
        yield bridge
    except BaseException:
        with contextlib.suppress(Exception):
            await bridge.aclose(flush_timeout=0)
        raise
    await bridge.aclose()


def describe(bridge: MqttBridge) -> str:
    return (
        f"bridge: connected={bridge.connected} connects={bridge.connects} buffered={bridge.buffered} "
        f"dropped={bridge.dropped} published={bridge.published}"
    )


async def until(
    condition: Callable[[], bool], what: str, timeout: float = 10.0, *, bridge: MqttBridge | None = None
) -> None:
    """Until ``condition`` holds; after ``timeout`` seconds fail, saying ``what`` was awaited (and how
    ``bridge`` is). Fails at once if the bridge's task ended."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if bridge is not None and (error := crashed(bridge)) is not None:
            pytest.fail(f"the bridge's task died ({error!r}) while waiting for {what}; {describe(bridge)}")
        if loop.time() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}" + (f"; {describe(bridge)}" if bridge else ""))
        await asyncio.sleep(0.005)


# ---------------------------------------------------------------------------------------------------
# Home Assistant: what each field must be, and a tiny evaluator of the bridge's value templates


EXPECTED_SENSORS: list[tuple[str, tuple[str | None, str | None, str]]] = [
    (
        r"kWh_Tot|kWh_Ln_[123]|kWh_Tariff_[1-4]|Rev_kWh_Tot|Rev_kWh_Ln_[123]|Resettable_kWh_Tot",
        ("energy", "kWh", "total_increasing"),
    ),
    (r"Reactive_Energy_Tot", (None, "kvarh", "total_increasing")),
    (r"RMS_Watts_Tot|RMS_Watts_Ln_[123]|Net_Calc_Watts_Tot", ("power", "W", "measurement")),
    (r"RMS_Volts_Ln_[123]", ("voltage", "V", "measurement")),
    (r"Amps_Ln_[123]", ("current", "A", "measurement")),
    (r"Line_Freq", ("frequency", "Hz", "measurement")),
    (r"Reactive_Pwr_Tot", ("reactive_power", "var", "measurement")),
    (r"Cos_Theta_Ln_[123]", ("power_factor", None, "measurement")),
    (r"Pulse_Cnt_[123]", (None, None, "total_increasing")),
]
"""Field → (device_class, unit_of_measurement, state_class) its Home Assistant sensor must have."""


def expected_sensor(name: str) -> tuple[str | None, str | None, str]:
    found = [kind for pattern, kind in EXPECTED_SENSORS if re.fullmatch(pattern, name)]
    assert len(found) == 1, f"the test does not know what sensor {name} should be"
    return found[0]


def render(template: str, state: dict[str, Any]) -> str:
    """The value templates the bridge uses, evaluated as Jinja would (any other template fails)."""
    if m := re.fullmatch(r"\{\{ value_json\.(\w+) \}\}", template):
        return str(state[m[1]])
    if m := re.fullmatch(r"\{\{ \(value_json\.(\w+)\[1:\] \| int\) / 100 \}\}", template):
        return str(int(state[m[1]][1:]) / 100)
    if m := re.fullmatch(r"\{\{ 'ON' if value_json\.(\w+) in \[([0-9, ]*)\] else 'OFF' \}\}", template):
        return "ON" if state[m[1]] in [int(n) for n in m[2].split(",")] else "OFF"
    pytest.fail(f"a value template this test cannot evaluate: {template!r}")


def state_of(read: Read) -> dict[str, Any]:
    """The state JSON a read must become."""
    return {"time": read.time.isoformat() if read.time else None, **read.fields}


def expected_configs(read: Read) -> dict[str, str]:
    """Discovery topic → field (or ``relay_n``) for a meter whose first read is ``read``: a sensor for
    each field of SENSORS the read has, and for a V4 meter its two relays."""
    address = read.address
    topics = {f"homeassistant/sensor/ekm_{address}/{name}/config": name for name in read.fields if name in SENSORS}
    if not read.v3:
        topics |= {f"homeassistant/switch/ekm_{address}/relay_{n}/config": f"relay_{n}" for n in (1, 2)}
    return topics


def check_config(config: dict[str, Any], address: str, name: str, read: Read, state: dict[str, Any]) -> None:
    """One discovery config of the meter of ``read``, its value template evaluated on a real ``state``."""
    assert config["availability_topic"] == "ekm/status"
    assert config["state_topic"] == f"ekm/{address}/state"
    device = config["device"]
    assert device["identifiers"] == [f"ekm_{address}"]
    assert device["manufacturer"] == "EKM Metering"
    assert device["model"] == ("Omnimeter v.3" if read.v3 else "Omnimeter Pulse v.4")
    assert device["sw_version"] == str(read.fields["Firmware"])
    assert config["unique_id"] == f"ekm_{address}_{name}"
    value = render(config["value_template"], state)
    if name.startswith("relay_"):
        assert config["command_topic"] == f"ekm/{address}/relay/{name[-1]}/set"
        assert (config["payload_on"], config["payload_off"]) == ("ON", "OFF")
        assert value == "OFF"  # relays start open: State_Out 1
        return
    device_class, unit, state_class = expected_sensor(name)
    assert config.get("device_class") == device_class, name
    assert config.get("unit_of_measurement") == unit, name
    assert config["state_class"] == state_class, name
    raw = state[name]
    if name.startswith("Cos_Theta"):
        assert re.fullmatch(r"[LC0]\d{3}", raw), raw
        assert float(value) == int(raw[1:]) / 100
        assert 0.0 <= float(value) <= 1.0
    else:
        assert type(raw) in (int, float), (name, raw)  # a number, for a numeric sensor
        assert float(value) == raw


def check_templates(configs: list[dict[str, Any]]) -> None:
    """The power-factor and relay templates on what meters send: Cos_Theta texts, and State_Out =
    1 + 2·(relay 1 closed) + (relay 2 closed)."""
    pf = next(c for c in configs if c["unique_id"].endswith("_Cos_Theta_Ln_1"))["value_template"]
    for text, factor in (("L099", 0.99), ("C085", 0.85), ("0100", 1.0)):
        assert float(render(pf, {"Cos_Theta_Ln_1": text})) == factor, text
    switches = {n: next(c for c in configs if c["unique_id"].endswith(f"_relay_{n}")) for n in (1, 2)}
    for one, two in itertools.product((False, True), repeat=2):
        state = {"State_Out": 1 + 2 * one + two}
        assert render(switches[1]["value_template"], state) == ("ON" if one else "OFF"), state
        assert render(switches[2]["value_template"], state) == ("ON" if two else "OFF"), state


# ---------------------------------------------------------------------------------------------------
# 1. Discovery


async def test_discovery_announces_sensors_device_and_relays_retained(broker: Broker, ekm_bus: Bus) -> None:
    async with asyncio.timeout(GUARD), contextlib.nullcontext(ekm_bus) as bus, subscriber(broker) as sub:
        recorder = Recorder()
        poller = Poller([bus.v4(X), bus.v3(Y)], interval=0.05, observers=[recorder])
        async with running(MqttBridge(poller, broker.url)) as bridge, poller:
            await until(lambda: all(len(sub.states(a)) >= 3 for a in (X, Y)), "states", bridge=bridge)
        first = {a: next(r for r in recorder.reads if r.address == a) for a in (X, Y)}
        expected = {topic: (a, name) for a, read in first.items() for topic, name in expected_configs(read).items()}
        must = {"kWh_Tot", "RMS_Watts_Tot", "RMS_Volts_Ln_1", "Amps_Ln_1", "Cos_Theta_Ln_1", "Pulse_Cnt_1"}
        assert {name for a, name in expected.values() if a == Y} >= must
        assert {name for a, name in expected.values() if a == X} >= must | {"Line_Freq", "relay_1", "relay_2"}
        assert not any(name.startswith("relay") for a, name in expected.values() if a == Y)  # a V3 has none

        configs = sub.on("homeassistant/")
        assert sorted(m.topic for m in configs) == sorted(expected)  # each once: not again with every read
        assert all(m.retain and m.qos == 1 for m in configs)
        for message in configs:
            address, name = expected[message.topic]
            check_config(message.json(), address, name, first[address], sub.states(address)[-1].json())
        check_templates([m.json() for m in configs])

        async with subscriber(broker, "homeassistant/#") as late:  # a late subscriber gets them all, retained
            await until(lambda: len(late.messages) >= len(expected), "the retained discovery configs")
            await asyncio.sleep(0.1)
        assert sorted((m.topic, m.payload) for m in late.messages) == sorted((m.topic, m.payload) for m in configs)
        assert all(m.retain for m in late.messages)


async def test_a_small_buffer_does_not_cost_the_discovery_configs(broker: Broker, ekm_bus: Bus) -> None:
    """The buffer bounds the states kept while the broker is away ("the oldest state is dropped"): a
    meter's discovery configs, put into it all at once with its first read, must not be lost to it."""
    async with asyncio.timeout(GUARD), contextlib.nullcontext(ekm_bus) as bus, subscriber(broker) as sub:
        recorder = Recorder()
        poller = Poller([bus.v4(X), bus.v3(Y)], interval=0.1, observers=[recorder])
        async with running(MqttBridge(poller, broker.url, buffer=5)) as bridge, poller:
            await until(lambda: all(len(sub.states(a)) >= 3 for a in (X, Y)), "states", bridge=bridge)
        await asyncio.sleep(0.1)
        first = {a: next(r for r in recorder.reads if r.address == a) for a in (X, Y)}
        expected = {topic for read in first.values() for topic in expected_configs(read)}
        announced = {m.topic for m in sub.on("homeassistant/")}
        assert sorted(expected - announced) == [], f"{len(expected - announced)} configs never sent"
        assert len(set(recorder.keys()) - sub.received()) <= bridge.dropped


# ---------------------------------------------------------------------------------------------------
# 2. States


async def test_every_read_arrives_as_json_on_its_state_topic_qos1_retained(broker: Broker, ekm_bus: Bus) -> None:
    count = 40
    async with asyncio.timeout(GUARD), contextlib.nullcontext(ekm_bus) as bus, subscriber(broker) as sub:
        recorder = Recorder()
        poller = Poller([bus.v4(X), bus.v3(Y)], interval=0.02, count=count, observers=[recorder])
        async with running(MqttBridge(poller, broker.url)) as bridge, poller:
            await poller.wait()
        await until(lambda: len(sub.states()) >= count, f"{count} states", bridge=bridge)
        await asyncio.sleep(0.1)
        states = sub.states()
        assert len(recorder.reads) == count
        assert {r.address for r in recorder.reads} == {X, Y}
        # Exactly once (no reconnection here), in the order the reads were made.
        assert [(m.topic.split("/")[1], m.json()["time"]) for m in states] == recorder.keys()
        for message, read in zip(states, recorder.reads, strict=True):
            assert message.topic == f"ekm/{read.address}/state"
            assert message.qos == 1
            assert message.retain
            payload = message.json()
            assert payload == state_of(read)
            for name, value in read.fields.items():
                assert type(payload[name]) is type(value), (name, payload[name], value)
            assert payload["Max_Demand_Period"] == 15  # minutes, as everywhere (docs/numbering.md), not code 1
            if read.address == X:
                assert payload["Max_Demand_Interval_Reset"] == "off"  # a word, not code 0
        assert (bridge.dropped, bridge.buffered, bridge.connects) == (0, 0, 1)
        assert bridge.published == count + len(sub.on("homeassistant/"))
        async with subscriber(broker, "ekm/+/state") as late:  # the broker keeps each meter's last state
            await until(lambda: len(late.messages) >= 2, "the retained states")
            await asyncio.sleep(0.1)
        last = {a: next(r for r in reversed(recorder.reads) if r.address == a) for a in (X, Y)}
        assert {m.topic: m.json() for m in late.messages} == {f"ekm/{a}/state": state_of(r) for a, r in last.items()}
        assert len(late.messages) == 2
        assert all(m.retain for m in late.messages)


# ---------------------------------------------------------------------------------------------------
# 3. Availability


@pytest.mark.parametrize("prefix", ["ekm", "site/7"])
async def test_availability_online_then_offline_when_the_poll_process_is_killed(
    broker: Broker, tmp_path: Path, prefix: str
) -> None:
    """``ekm-async poll --mqtt`` in a subprocess, killed with SIGKILL: its socket closes without a
    DISCONNECT, and mosquitto publishes the last will at once (not after the 15 s keepalive)."""
    stderr = tmp_path / "poll.stderr"
    args = ["poll", "--simulate", "2", "--sim-baud", "0", "--interval", "0.2", "--json", "--mqtt", broker.url]
    if prefix != "ekm":
        args += ["--mqtt-prefix", prefix]
    status = f"{prefix}/status"
    async with asyncio.timeout(GUARD), subscriber(broker) as sub:
        with stderr.open("w") as err:
            proc = await asyncio.create_subprocess_exec(*CLI, *args, stdout=subprocess.DEVNULL, stderr=err)
        try:
            await until(
                lambda: (
                    [m.text() for m in sub.on(status)] == ["online"]
                    and all(sub.states(a, prefix) for a in SIMULATED)
                    and all(sub.on(f"homeassistant/switch/ekm_{a}/") for a in SIMULATED)
                ),
                f"online on {status} and states of {SIMULATED}",
                timeout=20,
            )
            loop = asyncio.get_running_loop()
            killed = loop.time()
            proc.kill()
            assert await proc.wait() == -signal.SIGKILL
            await until(lambda: len(sub.on(status)) == 2, f"offline on {status} (the last will)", timeout=25)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        online, offline = sub.on(status)
        assert online.retain
        assert (offline.text(), offline.retain) == ("offline", True)
        assert offline.at - killed < 2.0, f"the will came {offline.at - killed:.2f} s after the kill"
        switch = sub.on(f"homeassistant/switch/ekm_{SIMULATED[0]}/relay_1/config")[0].json()
        assert switch["availability_topic"] == status
        assert switch["command_topic"] == f"{prefix}/{SIMULATED[0]}/relay/1/set"
        assert switch["state_topic"] == f"{prefix}/{SIMULATED[0]}/state"
        async with subscriber(broker, status) as late:
            await until(lambda: bool(late.messages), "the retained availability")
        assert [m.text() for m in late.messages] == ["offline"]
    assert "Traceback" not in stderr.read_text()


async def test_a_clean_stop_leaves_availability_offline(broker: Broker, ekm_bus: Bus) -> None:
    """Closing the bridge disconnects cleanly, so the broker does not send the last will: unless the
    bridge says ``offline`` itself, ``online`` stays retained for a bridge that is gone."""
    async with asyncio.timeout(GUARD), contextlib.nullcontext(ekm_bus) as bus, subscriber(broker) as sub:
        poller = Poller([bus.v4(X)], interval=0.05)
        async with running(MqttBridge(poller, broker.url)) as bridge, poller:
            await until(lambda: bool(sub.states(X)), "a state", bridge=bridge)
        await asyncio.sleep(0.2)
        async with subscriber(broker, "ekm/status") as late:
            await until(lambda: bool(late.messages), "the retained availability")
        assert sub.on("ekm/status")[0].text() == "online"
        assert [m.text() for m in late.messages] == ["offline"], "the stopped bridge is still announced online"


async def test_a_bridge_closed_before_its_first_connection_is_up_still_publishes(broker: Broker, ekm_bus: Bus) -> None:
    """A short run (``count=2`` on an unpaced bus) may end before the broker has answered: the close
    waits for the connection being made, within its flush time, instead of dropping the reads."""
    async with asyncio.timeout(GUARD), contextlib.nullcontext(ekm_bus) as bus, subscriber(broker) as sub:
        read = await bus.v4(X).read()
        bridge = MqttBridge(Poller([bus.v4(X)]), broker.url)
        await bridge.start()
        await bridge.on_read(read)
        assert not bridge.connected  # the race this is about: closed while connecting
        await bridge.aclose()
        assert (bridge.published, bridge.undelivered) == (len(bridge._discovery[X]) + 1, 0)
        await until(lambda: bool(sub.states(X)), "the state")
        assert sub.states(X)[-1].json()["Meter_Address"] == X


# ---------------------------------------------------------------------------------------------------
# 4. Relay commands


async def test_relay_commands_from_mqtt_reach_the_meter_and_show_in_its_next_state(
    broker: Broker, ekm_bus: Bus, ekm_sim: SimulatedBus
) -> None:
    meter, v3_meter = ekm_sim.model(X), ekm_sim.model(Y)
    async with asyncio.timeout(GUARD), contextlib.nullcontext(ekm_bus) as bus, subscriber(broker) as sub:
        poller = Poller([bus.v4(X), bus.v3(Y)], interval=0.05)
        async with running(MqttBridge(poller, broker.url, commands=True)) as bridge, poller:
            await until(lambda: bool(sub.states(X) and sub.states(Y)), "states", bridge=bridge)

            async def command(address: str, relay: int | str, payload: str | bytes) -> Msg:
                result = f"ekm/{address}/relay/{relay}/result"
                before = len(sub.on(result))
                await sub.client.publish(f"ekm/{address}/relay/{relay}/set", payload, qos=1)
                await until(lambda: len(sub.on(result)) > before, f"a result on {result}", bridge=bridge)
                return sub.on(result)[-1]

            async def states_after(message: Msg, n: int = 2) -> list[int]:
                """State_Out of the first ``n`` reads of X made after ``message`` arrived (reads and
                writes do not overlap on the bus: these reads were made after the write)."""

                def later() -> list[int]:
                    times = ((m, datetime.fromisoformat(m.json()["time"])) for m in sub.states(X))
                    return [m.json()["State_Out"] for m, t in times if t > message.wall]

                await until(lambda: len(later()) >= n, "reads after the command", bridge=bridge)
                return later()[:n]

            on = await command(X, 1, "ON")
            assert on.json() == {"ok": True, "state": "close"}
            assert not on.retain
            assert [r.closed for r in meter.relays] == [True, False]
            assert await states_after(on) == [3, 3]

            off = await command(X, 1, "OFF")
            assert off.json() == {"ok": True, "state": "open"}
            assert [r.closed for r in meter.relays] == [False, False]
            assert await states_after(off) == [1, 1]

            timed = await command(X, 2, json.dumps({"state": "close", "seconds": 1}))
            assert timed.json() == {"ok": True, "state": "close"}
            assert [r.closed for r in meter.relays] == [False, True]
            assert await states_after(timed) == [2, 2]
            await until(lambda: sub.states(X)[-1].json()["State_Out"] == 1, "relay 2 open again after 1 s")
            assert not meter.relays[1].closed
            assert sub.states(X)[-1].at - timed.at > 0.8

            writes = (list(meter.writes), list(v3_meter.writes))
            send = 'send ON, OFF or a JSON object like {"state": "close", "seconds": 5}'
            refused: list[tuple[str, int | str, str | bytes, str]] = [
                (UNKNOWN, 1, "ON", f"meter {UNKNOWN} is not one this service polls"),  # was "unknown command '…'"
                (X, 3, "ON", "relay must be 1 or 2; got 3"),
                (X, "x", "ON", "relay must be a whole number; got 'x'"),
                (X, 1, "BANANA", f"the payload 'BANANA' is not a command: {send}"),  # was "'BANANA'", a KeyError's text
                (X, 1, "", f"the payload is empty: {send}"),
                (
                    X,
                    1,
                    json.dumps({"state": "banana"}),
                    'the payload\'s "state" must be "close" or "open"; got "banana"',
                ),
                (X, 1, json.dumps({"state": 1}), 'the payload\'s "state" must be "close" or "open"; got 1'),
                (X, 1, json.dumps({"seconds": 5}), 'the payload needs "state": "close" or "open"'),
                (
                    X,
                    1,
                    json.dumps({"state": "close", "when": 5}),
                    'relay takes "relay", "state" and "seconds"; "when" is not one of them',
                ),  # was "relay takes ['relay', 'state', 'seconds']; missing [], unknown ['when']"
                (X, 1, json.dumps({"state": "close", "seconds": 10_000}), "seconds must be 0..9999; got 10000"),
                (
                    X,
                    1,
                    '{"state": "close"',
                    f"the payload is not JSON (expecting ',' delimiter at character 18): {send}",
                ),
                (X, 1, b"\xff", f"the payload is not UTF-8 text: {send}"),
                (Y, 1, "ON", f"meter {Y} has no relays"),  # a V3 meter
            ]
            for address, relay, payload, error in refused:
                result = (await command(address, relay, payload)).json()
                assert result == {"ok": False, "error": error}, (address, relay, payload)
            last = sub.on(f"ekm/{Y}/relay/1/result")[-1]
            assert (list(meter.writes), list(v3_meter.writes)) == writes  # nothing reached a meter
            assert [r.closed for r in meter.relays] == [False, False]
            assert await states_after(last) == [1, 1]


# ---------------------------------------------------------------------------------------------------
# 5. A broker restart during polling


@pytest.mark.parametrize("buffer", [10_000, 5], ids=["buffer-10000", "buffer-5"])
async def test_a_broker_restart_during_polling_loses_nothing_beyond_the_buffer(
    broker: Broker, ekm_bus: Bus, buffer: int
) -> None:
    """Two meters polled every 50 ms; the broker stops (SIGTERM) for about a second and comes back empty.
    Every read made reaches a subscriber (before the stop, or from the bridge's buffer after it), save
    exactly what the bridge counts dropped: the oldest, when more piled up than ``buffer``.

    With the big buffer, polling goes on while the bridge reconnects and flushes. With the tiny one it
    stops before the broker is back: reads arriving during the flush could (rightly) push out states
    newer than some already sent again, and the test could no longer tell which ones had to go."""
    delay = 0.5  # the window in which the test's subscriber connects to the new broker before the bridge
    async with asyncio.timeout(GUARD), contextlib.nullcontext(ekm_bus) as bus, contextlib.AsyncExitStack() as stack:
        loop = asyncio.get_running_loop()
        before = await stack.enter_async_context(subscriber(broker))
        recorder = Recorder()
        poller = Poller([bus.v4(X), bus.v3(Y)], interval=0.05, observers=[recorder])
        bridge = MqttBridge(poller, broker.url, buffer=buffer, reconnect_delay=delay, reconnect_max=delay)
        async with running(bridge), poller:
            await until(lambda: len(before.states()) >= 10, "states", bridge=bridge)
            killed, killed_at = loop.time(), datetime.now(UTC)
            broker.stop(signal.SIGTERM)
            async with Gatekeeper(broker.port) as gate:
                await until(lambda: not bridge.connected, "the bridge to see the broker gone", 3, bridge=bridge)
                # Keep the broker away for a second of polling; come back right after a failed attempt.
                await until(lambda: any(t - killed > 1.0 for t in gate.attempts), "attempts", 3, bridge=bridge)
                if buffer < 100:
                    await poller.aclose()  # the bridge has taken every read
            assert not bridge.connected
            outage = sum(r.time is not None and r.time > killed_at for r in recorder.reads)
            assert outage >= 20, outage  # they did pile up…
            if buffer > outage:  # …in the buffer (± the reads around the stop), up to its bound
                assert abs(bridge.buffered - outage) <= 2, (bridge.buffered, outage)
            else:
                assert bridge.buffered == buffer
            await broker.restart()
            after = await stack.enter_async_context(subscriber(broker))
            assert bridge.connects == 1, "the bridge was back before the test's subscriber: the test missed its window"
            await until(lambda: bridge.connects == 2 and bridge.buffered == 0, "the flush", 3, bridge=bridge)
            assert loop.time() - killed < 1.0 + 2 * delay + 0.5
            await poller.aclose()  # polling stops; the bridge publishes what was read last
            await until(lambda: bridge.buffered == 0, "the last reads published", 3, bridge=bridge)
            reads = recorder.keys()
            await until(lambda: reads[-1] in after.received(), "the last read on the new broker", 3)
        received = before.received() | after.received()
        assert received <= set(reads)  # nothing that was not read
        missing = [k for k in reads if k not in received]
        assert bridge.connects == 2
        if buffer > len(reads):
            assert bridge.dropped == 0
            assert missing == []
            return
        # The oldest went: of the reads the first broker did not deliver, all but the newest ``buffer``.
        undelivered = [k for k in reads if k not in before.received()]
        assert missing == undelivered[:-buffer]
        assert set(undelivered[-buffer:]) <= after.received()
        # At most one read counted dropped may have arrived all the same: the one being published when
        # the broker went (sent, never acknowledged), dropped from the head of the buffer later.
        assert bridge.dropped - 1 <= len(missing) <= bridge.dropped, (len(missing), bridge.dropped)
        assert bridge.dropped > 0


# ---------------------------------------------------------------------------------------------------
# 6. Reconnection: discovery again, back-off from the start


async def test_discovery_is_announced_again_to_a_fresh_broker(broker: Broker, ekm_bus: Bus) -> None:
    async with asyncio.timeout(GUARD), contextlib.nullcontext(ekm_bus) as bus, contextlib.AsyncExitStack() as stack:
        before = await stack.enter_async_context(subscriber(broker))
        poller = Poller([bus.v4(X), bus.v3(Y)], interval=0.2)
        bridge = MqttBridge(poller, broker.url, reconnect_delay=0.5, reconnect_max=0.5)
        async with running(bridge), poller:
            await until(lambda: bool(before.states(X) and before.states(Y)), "states", bridge=bridge)
            announced = {m.topic: m.payload for m in before.on("homeassistant/")}
            assert len(announced) > 10
            broker.stop(signal.SIGKILL)
            async with Gatekeeper(broker.port) as gate:
                await until(lambda: bool(gate.attempts), "an attempt to reconnect", 3, bridge=bridge)
            await broker.restart()
            after = await stack.enter_async_context(subscriber(broker))
            assert bridge.connects == 1, "the bridge was back before the test's subscriber: the test missed its window"
            await until(lambda: bridge.connects == 2, "the reconnection", 3, bridge=bridge)
            await until(lambda: len(after.on("homeassistant/")) >= len(announced), "the configs", 3, bridge=bridge)
            await until(lambda: bool(after.states(X) and after.states(Y)), "states", 3, bridge=bridge)
        assert {m.topic: m.payload for m in after.on("homeassistant/")} == announced
        assert all(m.retain for m in after.on("homeassistant/"))
        assert after.on("ekm/status")[0].text() == "online"
        async with subscriber(broker, "homeassistant/#") as late:  # and the new broker keeps them
            await until(lambda: len(late.messages) >= len(announced), "the retained configs")
        assert {m.topic: m.payload for m in late.messages} == announced


async def test_reconnect_back_off_starts_over_after_a_successful_connection(broker: Broker, ekm_bus: Bus) -> None:
    """Outage 1 lets the back-off grow (0.2, 0.4, 0.8 s…); once connected again, the next outage's first
    attempt comes ``reconnect_delay`` after the broker went, not after the grown delay."""
    delay = 0.2
    firsts: list[float] = []
    async with asyncio.timeout(GUARD), contextlib.nullcontext(ekm_bus) as bus:
        loop = asyncio.get_running_loop()
        poller = Poller([bus.v4(X)], interval=0.1)
        bridge = MqttBridge(poller, broker.url, reconnect_delay=delay, reconnect_max=5.0)
        async with running(bridge), poller:
            for outage, attempts in ((1, 2), (2, 1)):
                published = bridge.published  # connected, and publishing again (done announcing itself)
                up = f"connection {outage}"
                await until(lambda: bridge.connects == outage and bridge.published > published + 1, up, bridge=bridge)  # noqa: B023
                killed = loop.time()
                broker.stop(signal.SIGKILL)
                async with Gatekeeper(broker.port) as gate:
                    enough = f"{attempts} attempts to reconnect"
                    await until(lambda: len(gate.attempts) >= attempts, enough, 5, bridge=bridge)  # noqa: B023
                firsts.append(gate.attempts[0] - killed)
                await broker.restart()
            await until(lambda: bridge.connects == 3, "connection 3", 5, bridge=bridge)
    assert firsts[0] < delay + 0.3, firsts
    assert firsts[1] < delay + 0.3, f"first attempts after the broker went, in outages 1 and 2: {firsts}"


# ---------------------------------------------------------------------------------------------------
# 7. Usage errors


def cli(*args: str) -> tuple[int | str, str, str]:
    """``ekm-async ARGS…`` run by its ``main`` in this process: (exit status, or the exception that
    escaped it; stdout; stderr)."""
    out, err = io.StringIO(), io.StringIO()
    code: int | str
    with contextlib.redirect_stderr(err):
        try:
            code = main(list(args), stdout=out)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except Exception as exc:  # noqa: BLE001 — reported by the test's assertion
            code = repr(exc)
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize(
    "url",
    [
        "bad://x",
        "http://127.0.0.1:1883",
        "127.0.0.1:1883",
        "mqtt://:1883",
        "mqtt://127.0.0.1:99999",
        "mqtt://127.0.0.1:port",
        "mqtt://127.0.0.1:-1",
        "mqtt://127.0.0.1:0",
        "mqtt://user:hunter2@127.0.0.1:99999",
        "mqtts://user:hunter2@:8883",
    ],
)
def test_poll_with_a_bad_mqtt_url_exits_2_before_anything_starts(url: str, tmp_path: Path) -> None:
    db = tmp_path / "reads.db"
    code, out, err = cli("poll", "--simulate", "1", "--sim-baud", "0", "--count", "1", "--db", str(db), "--mqtt", url)
    assert code == 2, (code, err)
    assert "--mqtt" in err
    assert "hunter2" not in err  # a password in a bad URL is not repeated
    assert out == ""
    assert not db.exists()  # nothing was opened


def test_a_password_in_the_mqtt_url_is_warned_about(tmp_path: Path) -> None:
    args = ["--count", "1", "--mqtt", "mqtt://user:hunter2@127.0.0.1:1", "--mqtt-prefix", "#"]
    code, _, err = cli("poll", "--simulate", "1", "--sim-baud", "0", *args)
    assert code == 2
    assert "a password in --mqtt shows in ps" in err
    assert "hunter2" not in err


@pytest.mark.parametrize("prefix", ["#", "ekm/+", ""])
def test_poll_with_a_bad_mqtt_prefix_exits_2_before_anything_starts(prefix: str, tmp_path: Path) -> None:
    db = tmp_path / "reads.db"
    args = ["--count", "1", "--db", str(db), "--mqtt", f"mqtt://127.0.0.1:{free_port()}", "--mqtt-prefix", prefix]
    code, out, err = cli("poll", "--simulate", "1", "--sim-baud", "0", *args)
    assert code == 2, (code, err)
    assert out == ""
    assert not db.exists()  # nothing was opened
