"""Publish reads to MQTT with Home Assistant discovery, and take relay commands from MQTT (aiomqtt,
``pip install 'ekm-async[mqtt]'``).

``MqttBridge(poller, "mqtt://host:1883")`` is an observer of the poller:

* every read: the meter's state as JSON on ``{prefix}/{address}/state`` (QoS 1, retained);
* availability on ``{prefix}/status``: ``online`` while connected, ``offline`` as the broker's last will;
* availability ``offline`` published by :meth:`MqttBridge.aclose` too (a clean disconnect sends no will);
* Home Assistant discovery (retained), sent for a meter with its first read and again after every
  reconnect: one device per meter (model, firmware), a sensor per field of :data:`SENSORS` the meter
  has, and for V4 meters the two relays as switches;
* relay commands, only with ``commands=True`` (off by default: whoever may publish to the broker could
  otherwise switch the relays): ``ON``/``OFF`` (or JSON ``{"state": "close", "seconds": 5}``, checked
  as the web service checks a body) on ``{prefix}/{address}/relay/{n}/set`` drive ``set_relay`` with
  the meter handle's password (which is never published); the outcome is published on
  ``{prefix}/{address}/relay/{n}/result``. A retained command is ignored (it would fire again at every
  reconnect); a meter takes one command at a time and at most :data:`COMMAND_BURST` in a row, then one
  per :data:`COMMAND_SPACING` seconds — beyond that a command is refused, not queued;
* TLS with ``mqtts://`` (port 8883 by default): the broker's certificate is checked against
  ``ca_file`` (default: the system's CAs); ``client_cert``/``client_key`` for brokers that ask for one;
  ``username``/``password`` for brokers that want a login (not in the URL: it shows in ``ps``).

While the broker is away the bridge reconnects with exponential back-off (starting over after each
successful connection) and keeps the states in a bounded buffer (``buffer`` states, default 10000):
when it is full the oldest state is dropped and counted (``dropped``). Discovery configs are not in
that buffer (they are kept per meter, one set each, and never dropped). A message leaves the buffer
only once the broker acknowledged it (QoS 1): a broker restart loses nothing beyond the buffer, and a
state may arrive twice (at-least-once).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import ssl
from collections import deque
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import aiomqtt

from ._mqtt_check import DEFAULT_PORTS, check_prefix, check_url
from .blocks import Read
from .catalogue import SETTINGS, json_object
from .errors import EkmError
from .meters import V4Meter
from .model import RelayState, StateOut
from .poller import BaseObserver, Poller
from .text import unit

__all__ = ["SENSORS", "MqttBridge", "Sensor", "check_prefix", "check_url"]

log = logging.getLogger("ekm_async.mqtt")
MANUFACTURER = "EKM Metering"
DISCONNECT_WAIT = 1.0
"""Seconds :meth:`MqttBridge.aclose` waits for the broker to take the disconnect."""
MODELS = {"1024": "Omnimeter Pulse v.4", "1012": "Omnimeter v.3"}
COMMAND_BURST = 3
"""Relay commands a meter takes in a row before they are spaced."""
COMMAND_SPACING = 10.0
"""Seconds per further relay command of a meter, once its burst is spent."""
INCOMING_LIMIT = 100
"""Messages from the broker waiting to be looked at, at most (a flood beyond that is dropped by the client)."""


@dataclass(frozen=True, slots=True)
class Sensor:
    """How a field becomes a Home Assistant sensor."""

    device_class: str | None
    state_class: str
    template: str = "{{{{ value_json.{field} }}}}"


_ENERGY = Sensor("energy", "total_increasing")
_POWER = Sensor("power", "measurement")
_PF = Sensor("power_factor", "measurement", "{{{{ (value_json.{field}[1:] | int) / 100 }}}}")


def _lines(stem: str, sensor: Sensor) -> dict[str, Sensor]:
    return {f"{stem}{n}": sensor for n in (1, 2, 3)}


SENSORS: dict[str, Sensor] = {
    "kWh_Tot": _ENERGY,
    "Rev_kWh_Tot": _ENERGY,
    **_lines("kWh_Ln_", _ENERGY),
    **_lines("Rev_kWh_Ln_", _ENERGY),
    **{f"kWh_Tariff_{n}": _ENERGY for n in (1, 2, 3, 4)},
    "Resettable_kWh_Tot": _ENERGY,
    "Reactive_Energy_Tot": Sensor(None, "total_increasing"),
    "RMS_Watts_Tot": _POWER,
    **_lines("RMS_Watts_Ln_", _POWER),
    "Net_Calc_Watts_Tot": _POWER,
    **_lines("RMS_Volts_Ln_", Sensor("voltage", "measurement")),
    **_lines("Amps_Ln_", Sensor("current", "measurement")),
    "Line_Freq": Sensor("frequency", "measurement"),
    "Reactive_Pwr_Tot": Sensor("reactive_power", "measurement"),
    **{f"Cos_Theta_Ln_{n}": _PF for n in (1, 2, 3)},
    **_lines("Pulse_Cnt_", Sensor(None, "total_increasing")),
}
"""Field → Home Assistant sensor (only the fields a meter's reads carry are announced); its unit is the
field's (:data:`ekm_async.text.UNITS`)."""

_RELAY_ON = {relay: tuple(s.value for s in StateOut if s.closed(relay)) for relay in (1, 2)}
"""The ``State_Out`` values in which relay 1 or 2 is on (closed): 3, 4 and 2, 4."""
_COMMANDS = {"ON": "close", "OFF": "open"}
RELAY = SETTINGS["relay"]


@dataclass(frozen=True, slots=True)
class _Message:
    topic: str
    payload: str


class MqttBridge(BaseObserver):
    """Reads of ``poller`` to MQTT, relay commands from MQTT. ``async with MqttBridge(poller, url):``"""

    def __init__(
        self,
        poller: Poller,
        url: str = "mqtt://127.0.0.1:1883",
        *,
        prefix: str = "ekm",
        discovery_prefix: str = "homeassistant",
        buffer: int = 10_000,
        client_id: str | None = None,
        reconnect_delay: float = 0.5,
        reconnect_max: float = 30.0,
        username: str | None = None,
        password: str | None = None,
        ca_file: str | os.PathLike[str] | None = None,
        client_cert: str | os.PathLike[str] | None = None,
        client_key: str | os.PathLike[str] | None = None,
        commands: bool = False,
    ) -> None:
        parts = check_url(url)
        if buffer < 1:
            raise ValueError(f"buffer must be ≥ 1; got {buffer}")
        self.tls = parts.scheme == "mqtts"
        if not self.tls and (ca_file or client_cert or client_key):
            raise ValueError("ca_file, client_cert and client_key need an mqtts:// url")
        if client_key and not client_cert:
            raise ValueError("client_key needs client_cert")
        self.poller = poller
        self.host: str = parts.hostname or ""  # check_url: never empty
        self.port: int = parts.port or DEFAULT_PORTS[parts.scheme]
        self._username = username if username is not None else parts.username
        self._password = password if password is not None else parts.password
        self._tls_files = (ca_file, client_cert, client_key)
        self._tls: ssl.SSLContext | None = None
        self.commands = commands
        self._command_budget: dict[str, tuple[float, float]] = {}
        """Per meter: (commands it may still take at once, loop time of that count)."""
        self._commanding: set[str] = set()
        """Meters with a relay command in progress."""
        self.commands_refused = 0
        self.prefix = check_prefix(prefix)
        self.discovery_prefix = check_prefix(discovery_prefix, "discovery_prefix")
        self.client_id = client_id or f"ekm-async-{socket.gethostname()}-{os.getpid()}"
        self._reconnect = (reconnect_delay, reconnect_max)
        self._buffer: deque[_Message] = deque()
        """States not yet acknowledged, oldest first (at most ``buffer``)."""
        self._size = buffer
        self._ready = asyncio.Event()
        self._discovery: dict[str, list[_Message]] = {}
        """Each meter's discovery messages, sent again after every reconnect."""
        self._unannounced: deque[_Message] = deque()
        """Discovery messages not yet acknowledged on this connection (sent before any state)."""
        self._client: aiomqtt.Client | None = None
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0
        self.published = 0
        self.connects = 0
        self.connected = False
        self._connecting = False
        """A connection is being made (not yet up, not yet failed): a close waits for it to publish."""
        self.last_error = ""
        """Why the last connection failed or ended."""
        self._closing = False
        self._commands_running: set[asyncio.Task[None]] = set()
        poller.add_observer(self)

    # -----------------------------------------------------------------------------------------------
    # Topics

    @property
    def availability_topic(self) -> str:
        return f"{self.prefix}/status"

    def state_topic(self, address: str) -> str:
        return f"{self.prefix}/{address}/state"

    def command_topic(self, address: str, relay: int) -> str:
        return f"{self.prefix}/{address}/relay/{relay}/set"

    # -----------------------------------------------------------------------------------------------
    # Lifecycle

    async def start(self) -> MqttBridge:
        """Connect in the background (a TLS context is made first: a bad CA or certificate file raises
        ``ValueError`` here)."""
        if self.tls and self._tls is None:
            try:
                self._tls = await asyncio.to_thread(_client_context, *self._tls_files)
            except (OSError, ssl.SSLError) as exc:
                raise ValueError(f"cannot use the TLS files (CA, client certificate, key): {exc}") from None
        if self._task is None:
            self._connecting = True  # from now: a close before the task has run waits for its connection too
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"ekm-mqtt {self.host}")
        return self

    async def aclose(self, *, flush_timeout: float = 3.0) -> None:
        """Publish what is buffered (for up to ``flush_timeout`` seconds while connected, or while a
        connection is being made: a bridge closed before its first connection is up still publishes),
        say ``offline``, then disconnect. What could not be published stays counted in :attr:`undelivered`."""
        if self._task is None:
            return
        self._closing = True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(flush_timeout):
                while (self._buffer or self._unannounced) and (self.connected or self._connecting):
                    await asyncio.sleep(0.02)
                if self._client is not None and self.connected:
                    with contextlib.suppress(aiomqtt.MqttError):
                        await self._client.publish(self.availability_topic, "offline", qos=1, retain=True)
        task, self._task = self._task, None
        task.cancel()
        _, running = await asyncio.wait([task], timeout=DISCONNECT_WAIT)  # our own cancellation is not eaten
        if running:  # a broker that does not answer the disconnect is not waited for any longer
            task.cancel()
            await asyncio.wait([task])

    async def __aenter__(self) -> MqttBridge:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    @property
    def buffered(self) -> int:
        """States waiting for the broker's acknowledgement."""
        return len(self._buffer)

    @property
    def undelivered(self) -> int:
        """States the broker never acknowledged: still buffered, or dropped when the buffer was full."""
        return len(self._buffer) + self.dropped

    # -----------------------------------------------------------------------------------------------
    # Observer

    async def on_read(self, read: Read) -> None:
        address = read.address
        if address not in self._discovery:
            self._discovery[address] = self._discovery_messages(read)
            self._unannounced.extend(self._discovery[address])
        if len(self._buffer) >= self._size:
            self._buffer.popleft()
            self.dropped += 1
        state = {"time": read.time.isoformat() if read.time else None, **read.fields}
        self._buffer.append(_Message(self.state_topic(address), json.dumps(state)))
        self._ready.set()

    # -----------------------------------------------------------------------------------------------
    # Home Assistant discovery

    def _discovery_messages(self, read: Read) -> list[_Message]:
        address = read.address
        model = str(read.fields.get("Model", ""))
        device = {
            "identifiers": [f"ekm_{address}"],
            "name": f"EKM meter {address}",
            "manufacturer": MANUFACTURER,
            "model": MODELS.get(model, f"Omnimeter ({model})"),
            "sw_version": str(read.fields.get("Firmware", "")),
            "serial_number": address,
        }
        common = {"availability_topic": self.availability_topic, "device": device}
        out = []
        for field, sensor in SENSORS.items():
            if field not in read.fields:
                continue
            config: dict[str, Any] = {
                **common,
                "name": field.replace("_", " "),
                "unique_id": f"ekm_{address}_{field}",
                "state_topic": self.state_topic(address),
                "value_template": sensor.template.format(field=field),
                "state_class": sensor.state_class,
            }
            if sensor.device_class:
                config["device_class"] = sensor.device_class
            if unit(field):  # the field's unit, as everywhere (ekm_async.text)
                config["unit_of_measurement"] = unit(field)
            topic = f"{self.discovery_prefix}/sensor/ekm_{address}/{field}/config"
            out.append(_Message(topic, json.dumps(config)))
        if not read.v3:
            for relay, on in _RELAY_ON.items():
                config = {
                    **common,
                    "name": f"Relay {relay}",
                    "unique_id": f"ekm_{address}_relay_{relay}",
                    "state_topic": self.state_topic(address),
                    "value_template": f"{{{{ 'ON' if value_json.State_Out in {list(on)} else 'OFF' }}}}",
                    "command_topic": self.command_topic(address, relay),
                    "payload_on": "ON",
                    "payload_off": "OFF",
                }
                topic = f"{self.discovery_prefix}/switch/ekm_{address}/relay_{relay}/config"
                out.append(_Message(topic, json.dumps(config)))
        return out

    # -----------------------------------------------------------------------------------------------
    # The connection

    async def _run(self) -> None:
        delay, most = self._reconnect
        wait = delay
        while True:  # also once closing began: a close waits for the connection it may still publish on
            connects = self.connects
            failure: aiomqtt.MqttError | None = None
            self._connecting = True
            try:
                await self._session()
            except* aiomqtt.MqttError as group:  # from the connect, or from either task of the session
                failure = next(e for e in group.exceptions if isinstance(e, aiomqtt.MqttError))
            finally:
                self.connected, self._client, self._connecting = False, None, False
            if self._closing:
                # aclose() cancelled us; on Python 3.11 a TaskGroup whose child failed at the same
                # moment raises that failure instead of the cancellation: stop here all the same.
                raise asyncio.CancelledError
            self.last_error = str(failure)
            if self.connects > connects:  # it was connected: the back-off starts over
                wait = delay
            log.warning("MQTT broker %s:%s: %s (again in %.1f s)", self.host, self.port, failure, wait)
            await asyncio.sleep(wait)
            wait = min(most, wait * 2)

    async def _session(self) -> None:
        will = aiomqtt.Will(self.availability_topic, "offline", qos=1, retain=True)
        async with aiomqtt.Client(
            self.host,
            self.port,
            username=self._username,
            password=self._password,
            identifier=self.client_id,
            will=will,
            keepalive=15,
            timeout=10,
            tls_context=self._tls,
            max_queued_incoming_messages=INCOMING_LIMIT,
        ) as client:
            self.connected, self._client, self._connecting = True, client, False
            self.connects += 1
            # A new broker may have lost the retained configs: announce every meter again.
            self._unannounced = deque(m for messages in self._discovery.values() for m in messages)
            await client.publish(self.availability_topic, "online", qos=1, retain=True)
            if self.commands:
                await client.subscribe(f"{self.prefix}/+/relay/+/set", qos=1)
            async with asyncio.TaskGroup() as group:
                # Also without commands: the message iterator is what ends at once when the broker goes.
                group.create_task(self._commands(client))
                group.create_task(self._publish(client))

    async def _publish(self, client: aiomqtt.Client) -> None:
        """Discovery first, then the states, each retained and removed only once acknowledged."""
        while True:
            queue = self._unannounced or self._buffer
            if not queue:
                self._ready.clear()
                await self._ready.wait()
                continue
            message = queue[0]
            await client.publish(message.topic, message.payload, qos=1, retain=True)
            if queue and queue[0] is message:  # acknowledged: now it may go (unless dropped meanwhile)
                queue.popleft()
            self.published += 1

    async def _commands(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            topic = str(message.topic)
            if not self.commands:  # not subscribed to any: nothing should come
                continue
            if message.retain:  # left on the broker by someone: not a command given now
                log.warning("retained relay command on %s ignored", topic)
                continue
            task = asyncio.get_running_loop().create_task(self._command(client, topic, message.payload))
            self._commands_running.add(task)  # kept until done (the loop holds tasks weakly)
            task.add_done_callback(self._commands_running.discard)

    def _admit(self, address: str) -> None:
        """Take one of the meter's commands, or raise ``_Refused`` (busy, or too many too fast)."""
        if address in self._commanding:
            raise _Refused(f"meter {address} is carrying out a relay command already")
        now = asyncio.get_running_loop().time()
        budget, since = self._command_budget.get(address, (COMMAND_BURST, now))
        budget = min(COMMAND_BURST, budget + (now - since) / COMMAND_SPACING)
        if budget < 1:
            wait = (1 - budget) * COMMAND_SPACING
            raise _Refused(f"too many relay commands for meter {address}: again in {wait:.0f} s")
        self._command_budget[address] = (budget - 1, now)

    async def _command(self, client: aiomqtt.Client, topic: str, payload: Any) -> None:
        """``{prefix}/{address}/relay/{n}/set`` → ``set_relay``; the outcome on ``…/result``."""
        parts = topic[len(self.prefix) + 1 :].split("/")
        result: dict[str, Any]
        address = parts[0]
        try:
            relay = RELAY.arguments[0].parse(parts[2])  # the topic level, as a command-line word
            try:
                meter = self.poller.meter(address)
            except KeyError:
                raise ValueError(f"meter {address} is not one this service polls") from None
            if not isinstance(meter, V4Meter):
                raise ValueError(f"meter {address} has no relays")
            command = _relay_command(payload)
            if command.setdefault("relay", relay) != relay:
                raise ValueError(f"the topic is relay {relay}'s, the payload says relay {command['relay']!r}")
            arguments = RELAY.from_json(command)  # as the web service takes a body
            RELAY.request(**arguments)  # every check made before the command counts against the meter's budget
            self._admit(address)
            self._commanding.add(address)
            try:
                await meter.apply(RELAY, actor=f"mqtt {topic}", **arguments)
            finally:
                self._commanding.discard(address)
            result = {"ok": True, "state": command["state"]}
        except (KeyError, ValueError, IndexError, TypeError, EkmError, TimeoutError, _Refused) as exc:
            if isinstance(exc, _Refused):
                self.commands_refused += 1
            log.warning("relay command on %s refused: %s", topic, _said(exc))
            result = {"ok": False, "error": _said(exc)}
        with contextlib.suppress(aiomqtt.MqttError):
            await client.publish(topic.removesuffix("/set") + "/result", json.dumps(result), qos=1)


class _Refused(Exception):
    """A relay command not taken now (the meter is busy with one, or had too many)."""


def _said(exc: BaseException) -> str:
    """A refused command in words: without the bytes a meter sent, never an exception's name or repr."""
    if isinstance(exc, EkmError):
        return exc.brief
    if isinstance(exc, KeyError):
        return f"the relay command failed: {exc.args[0] if exc.args else 'something'} is unknown"
    if isinstance(exc, TimeoutError):
        return "the meter did not answer in time: try again"
    return str(exc) or "the relay command failed"


_SEND = 'send ON, OFF or a JSON object like {"state": "close", "seconds": 5}'
"""What a relay command's payload may be."""
_STATES = tuple(sorted(state.name.lower() for state in RelayState))  # "close", "open"


def _relay_command(payload: Any) -> dict[str, Any]:
    """``ON``/``OFF`` or a JSON object, as :func:`ekm_async.catalogue.json_object` takes a web body;
    ``ValueError``, a sentence that says what to send, for anything else."""
    raw = payload if isinstance(payload, bytes | bytearray) else str(payload).encode()
    try:
        text = bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"the payload is not UTF-8 text: {_SEND}") from None
    if not text.lstrip().startswith("{"):
        word = text.strip().upper()
        if not word:
            raise ValueError(f"the payload is empty: {_SEND}")
        if word not in _COMMANDS:
            raise ValueError(f"the payload {_shown(text.strip())!r} is not a command: {_SEND}")
        return {"state": _COMMANDS[word]}
    try:
        command = json_object(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"the payload is not JSON ({exc.msg.lower()} at character {exc.pos + 1}): {_SEND}") from None
    except ValueError as exc:
        raise ValueError(f"the payload cannot be taken ({exc}): {_SEND}") from None
    state = command.get("state")
    if "state" not in command:
        raise ValueError('the payload needs "state": "close" or "open"')
    if not (isinstance(state, str) and state.strip().lower() in _STATES):
        raise ValueError(f'the payload\'s "state" must be "close" or "open"; got {_shown(json.dumps(state))}')
    command["state"] = state.strip().lower()
    return command  # its keys: RELAY.from_json, as the web's bodies


def _shown(text: str, most: int = 40) -> str:
    """``text`` for a message, cut short if long (a payload can be anything)."""
    return text if len(text) <= most else text[:most] + "…"


def _client_context(
    ca_file: str | os.PathLike[str] | None,
    client_cert: str | os.PathLike[str] | None,
    client_key: str | os.PathLike[str] | None,
) -> ssl.SSLContext:
    """A TLS client context that checks the broker against ``ca_file`` (default: the system's CAs) and
    shows ``client_cert`` if given (files are read here: call it off the event loop)."""
    context = ssl.create_default_context(cafile=ca_file)
    if client_cert is not None:
        context.load_cert_chain(client_cert, client_key)
    return context
