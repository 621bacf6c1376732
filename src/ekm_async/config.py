"""The configuration of a deployment (``ekm-async run --config FILE``): one TOML file for the buses and
their meters, the store, the web service and MQTT (docs/config.md).

:func:`load` reads and checks a file completely before anything is started: every key is known, of its
type and in its range; every secret (meter passwords, the web token, the MQTT password) is read from
its file or environment variable, never from the file itself; paths are relative to the file's
directory. Anything wrong raises :class:`ConfigError`, one line naming the file and the key.

Secrets are kept out of ``repr`` (a config printed or logged shows none).
"""

from __future__ import annotations

import os
import tomllib
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ._mqtt_check import check_prefix, check_url
from .bus import BusOptions, open_bus
from .errors import EkmError
from .wire import require_address, require_password

__all__ = [
    "BusConfig",
    "Config",
    "ConfigError",
    "MeterConfig",
    "MqttConfig",
    "StoreConfig",
    "WebConfig",
    "example",
    "load",
    "parse",
    "parse_tokens",
    "read_secret",
    "sections",
]

FACTORY_PASSWORD = "00000000"


class ConfigError(EkmError, ValueError):
    """A configuration that cannot be used; the message names the file and the key."""


@dataclass(frozen=True, slots=True)
class MeterConfig:
    address: str
    version: str
    """``v3`` or ``v4``."""
    interval: float
    """Seconds between reads (the bus's ``interval`` unless given)."""
    b_every: int = 1
    """V4: read the B block every N reads (1: every read)."""
    password: str = field(default=FACTORY_PASSWORD, repr=False)
    password_source: str = ""
    """Where the password came from (``password_file = …`` / ``password_env = …``), for messages."""


@dataclass(frozen=True, slots=True)
class BusConfig:
    url: str
    """The bus's URL; ``simulate`` for the built-in simulator (its meters are this bus's meters)."""
    options: Mapping[str, Any]
    """:class:`~ekm_async.BusOptions` keywords (checked)."""
    meters: tuple[MeterConfig, ...]

    @property
    def simulated(self) -> bool:
        return self.url == SIMULATE


SIMULATE = "simulate"


@dataclass(frozen=True, slots=True)
class StoreConfig:
    path: Path


@dataclass(frozen=True, slots=True)
class WebConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    tokens: Mapping[str, str] = field(default_factory=dict, repr=False)
    """The bearer tokens writes need, by name (:func:`parse_tokens`; none: writes are refused)."""
    allowed_hosts: tuple[str, ...] = ()
    """Host headers accepted besides the bound address and localhost."""
    tls_cert: Path | None = None
    tls_key: Path | None = None
    max_streams: int = 32
    """Live-stream (SSE) clients at once; more are answered 503."""


@dataclass(frozen=True, slots=True)
class MqttConfig:
    url: str
    prefix: str = "ekm"
    discovery_prefix: str = "homeassistant"
    ca_file: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    commands: bool = False
    """Take relay commands from the broker (off unless asked for)."""


@dataclass(frozen=True, slots=True)
class Config:
    path: Path
    buses: tuple[BusConfig, ...]
    store: StoreConfig | None = None
    web: WebConfig | None = None
    mqtt: MqttConfig | None = None

    @property
    def meters(self) -> int:
        return sum(len(bus.meters) for bus in self.buses)


# ---------------------------------------------------------------------------------------------------
# Reading tables: each table's keys are data (name → how to check it), not branches.

_REQUIRED: Any = object()


@dataclass(frozen=True, slots=True)
class _Key:
    types: tuple[type, ...]
    default: Any = _REQUIRED
    check: Callable[[Any], Any] | None = None
    """Returns the value to keep, or raises ``ValueError`` with what is wrong."""
    meaning: str = ""
    """What the value must be, for a message about its type."""


def _describe(types: tuple[type, ...]) -> str:
    if set(types) == {int, float}:
        return "a number"
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string", list: "a list"}
    return " or ".join(dict.fromkeys(names.get(t, t.__name__) for t in types))


def _type_ok(value: Any, types: tuple[type, ...]) -> bool:
    if isinstance(value, bool):
        return bool in types
    return isinstance(value, types)


class _Reader:
    """Checks the tables of one file; every message begins with the file and the key."""

    def __init__(self, path: Path, environ: Mapping[str, str]) -> None:
        self.path = path
        self.base = path.parent
        self.environ = environ

    def error(self, where: str, message: str) -> ConfigError:
        return ConfigError(f"{self.path}: {where}: {message}" if where else f"{self.path}: {message}")

    def table(self, data: Any, where: str, keys: Mapping[str, _Key]) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise self.error(where, "must be a table")
        unknown = [k for k in data if k not in keys]
        if unknown:
            known = ", ".join(keys)
            raise self.error(_join(where, unknown[0]), f"unknown key (known here: {known})")
        out: dict[str, Any] = {}
        for name, key in keys.items():
            at = _join(where, name)
            if name not in data:
                if key.default is _REQUIRED:
                    raise self.error(at, "missing")
                out[name] = key.default
                continue
            value = data[name]
            if not _type_ok(value, key.types):
                raise self.error(at, f"must be {key.meaning or _describe(key.types)}; got {value!r}")
            if key.check is not None:
                try:
                    value = key.check(value)
                except ValueError as exc:
                    raise self.error(at, str(exc)) from None
            out[name] = value
        return out

    def file(self, value: str) -> Path:
        """A path, relative to the config file's directory."""
        path = Path(value).expanduser()
        return path if path.is_absolute() else self.base / path

    def existing(self, value: str) -> Path:
        path = self.file(value)
        if not path.is_file():
            raise ValueError(f"no such file: {path}")
        return path

    def secret(self, values: dict[str, Any], where: str, stem: str) -> tuple[str | None, str]:
        """The secret of ``{stem}_file`` or ``{stem}_env`` (not both), and where it came from."""
        file, env = values.get(f"{stem}_file"), values.get(f"{stem}_env")
        if file is not None and env is not None:
            raise self.error(where, f"give {stem}_file or {stem}_env, not both")
        if file is not None:
            path = self.file(file)
            try:
                return read_secret(path), f"{stem}_file = {str(path)!r}"
            except ValueError as exc:
                raise self.error(_join(where, f"{stem}_file"), str(exc)) from None
        if env is not None:
            value = self.environ.get(env)
            if not value:
                raise self.error(_join(where, f"{stem}_env"), f"the environment variable {env} is not set")
            return value, f"{stem}_env = {env!r}"
        return None, ""


def read_secret(path: str | os.PathLike[str]) -> str:
    """The secret a file holds (its line end stripped), else ``ValueError`` saying why (never what it
    holds). Reads the file: call it before the event loop runs, or off it."""
    try:
        with open(path, encoding="utf-8") as f:
            secret = f.read().strip("\r\n")
    except (OSError, UnicodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise ValueError(f"cannot read {path}: {reason}") from None
    if not secret:
        raise ValueError(f"{path} is empty")
    return secret


def parse_tokens(text: str) -> dict[str, str]:
    """The web tokens of a token file's text: one per line, ``NAME TOKEN`` (the name is what the audit
    trail says of whoever used it) or a lone ``TOKEN`` (named ``token``); blank lines and ``#`` comments
    are skipped. ``ValueError`` (never showing a token) for a file that holds none, or a name twice."""
    tokens: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if len(words) > 2:
            raise ValueError(f"line {number}: NAME TOKEN or a lone TOKEN (no spaces in either)")
        name, token = words if len(words) == 2 else ("token", words[0])
        if name in tokens:
            raise ValueError(f"line {number}: a second token named {name!r}")
        tokens[name] = token
    if not tokens:
        raise ValueError("no token in it")
    return tokens


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _positive(value: float) -> float:
    if not value > 0:
        raise ValueError(f"must be > 0; got {value!r}")
    return float(value)


def _non_negative(value: float) -> float:
    if value < 0:
        raise ValueError(f"must be ≥ 0; got {value!r}")
    return float(value)


def _port(value: int) -> int:
    if not 0 <= value <= 65535:
        raise ValueError(f"must be 0..65535; got {value}")
    return value


def _version(value: str) -> str:
    if value not in ("v3", "v4"):
        raise ValueError(f"must be 'v3' or 'v4'; got {value!r}")
    return value


def _b_every(value: int) -> int:
    if value < 1:
        raise ValueError(f"must be ≥ 1; got {value}")
    return value


def _hosts(value: list[Any]) -> tuple[str, ...]:
    if not all(isinstance(h, str) and h and "/" not in h for h in value):
        raise ValueError(f"must be a list of host names; got {value!r}")
    return tuple(h.lower() for h in value)


def _bus_url(value: str) -> str:
    if value == SIMULATE:
        return value
    try:
        open_bus(value)  # checks the URL's shape; opens nothing
    except ValueError as exc:
        raise ValueError(str(exc)) from None
    return value


_SECRET_KEYS = {"password_file": _Key((str,), None), "password_env": _Key((str,), None)}

_METER_KEYS: dict[str, _Key] = {
    "address": _Key((str,), check=require_address, meaning="a string of 12 digits"),
    "version": _Key((str,), "v4", _version, "'v3' or 'v4'"),
    "interval": _Key((int, float), None, _non_negative),
    "b_every": _Key((int,), 1, _b_every),
    **_SECRET_KEYS,
}

_BUS_OPTION_TYPES: dict[str, tuple[type, ...]] = {
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    "str": (str,),
    "str | bool": (str, bool),
    "str | None": (str,),
}


def _bus_keys() -> dict[str, _Key]:
    """The bus table's keys: ``url``, ``interval``, ``meter`` and every :class:`BusOptions` field."""
    hints = typing.get_type_hints(BusOptions)
    options = {
        f.name: _Key(_BUS_OPTION_TYPES[_type_name(hints[f.name])], f.default)
        for f in fields(BusOptions)
        if f.name != "capture"
    }
    return {
        "url": _Key((str,), check=_bus_url, meaning=f"a bus URL or {SIMULATE!r}"),
        "interval": _Key((int, float), 10.0, _non_negative),
        **options,
        "capture": _Key((str,), None),
        "meter": _Key((list,), meaning="a list of [[bus.meter]] tables"),
    }


def _type_name(hint: Any) -> str:
    return hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "").replace("NoneType", "None")


_STORE_KEYS = {"path": _Key((str,))}

_WEB_KEYS: dict[str, _Key] = {
    "host": _Key((str,), "127.0.0.1"),
    "port": _Key((int,), 8080, _port),
    "token_file": _Key((str,), None),
    "token_env": _Key((str,), None),
    "allowed_hosts": _Key((list,), (), _hosts, "a list of host names"),
    "tls_cert": _Key((str,), None),
    "tls_key": _Key((str,), None),
    "max_streams": _Key((int,), 32, _b_every),
}

_MQTT_KEYS: dict[str, _Key] = {
    "url": _Key((str,)),
    "prefix": _Key((str,), "ekm"),
    "discovery_prefix": _Key((str,), "homeassistant"),
    "ca_file": _Key((str,), None),
    "client_cert": _Key((str,), None),
    "client_key": _Key((str,), None),
    "username": _Key((str,), None),
    **_SECRET_KEYS,
    "commands": _Key((bool,), False),
}


def sections() -> dict[str, dict[str, _Key]]:
    """Every table of a config file and its keys (docs/config.md is rendered from these)."""
    return {
        "[[bus]]": _bus_keys(),
        "[[bus.meter]]": _METER_KEYS,
        "[store]": _STORE_KEYS,
        "[web]": _WEB_KEYS,
        "[mqtt]": _MQTT_KEYS,
    }


def describe_key(key: _Key) -> tuple[str, str]:
    """(what the value must be, its default) in words, for docs/config.md."""
    default = "required" if key.default is _REQUIRED else "none" if key.default is None else repr(key.default)
    if isinstance(key.default, bool):
        default = str(key.default).lower()
    return key.meaning or _describe(key.types), default.replace("()", "[]")


_TOP_KEYS: dict[str, _Key] = {
    "bus": _Key((list,), meaning="a list of [[bus]] tables"),
    "store": _Key((dict,), None),
    "web": _Key((dict,), None),
    "mqtt": _Key((dict,), None),
}


# ---------------------------------------------------------------------------------------------------
# The file


def load(path: str | os.PathLike[str], environ: Mapping[str, str] | None = None) -> Config:
    """Read and check the config file at ``path`` (secrets from ``environ``, default ``os.environ``)."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(f"{file}: cannot read the config file: {reason}") from None
    return parse(text, file, environ)


def parse(text: str, path: str | os.PathLike[str] = "config.toml", environ: Mapping[str, str] | None = None) -> Config:
    """The config of TOML ``text`` (``path``: where it came from, for messages and relative paths)."""
    reader = _Reader(Path(path), os.environ if environ is None else environ)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise reader.error("", f"not valid TOML: {exc}") from None
    top = reader.table(data, "", _TOP_KEYS)
    buses = tuple(_bus(reader, raw, f"bus[{n}]") for n, raw in enumerate(top["bus"]))
    if not buses:
        raise reader.error("bus", "no bus: give at least one [[bus]] with its [[bus.meter]]")
    seen: dict[str, str] = {}
    for n, bus in enumerate(buses):
        for m, meter in enumerate(bus.meters):
            where = f"bus[{n}].meter[{m}].address"
            if meter.address in seen:
                raise reader.error(where, f"meter {meter.address} is also {seen[meter.address]}")
            seen[meter.address] = where
    return Config(
        reader.path,
        buses,
        _store(reader, top["store"]) if top["store"] is not None else None,
        _web(reader, top["web"]) if top["web"] is not None else None,
        _mqtt(reader, top["mqtt"]) if top["mqtt"] is not None else None,
    )


def _bus(reader: _Reader, raw: Any, where: str) -> BusConfig:
    values = reader.table(raw, where, _bus_keys())
    url, interval, meters = values.pop("url"), values.pop("interval"), values.pop("meter")
    if values["capture"] is not None:
        values["capture"] = str(reader.file(values["capture"]))
    try:
        BusOptions(**values)
    except ValueError as exc:
        raise reader.error(where, str(exc)) from None
    if not meters:
        raise reader.error(_join(where, "meter"), "no meter on this bus")
    checked = tuple(_meter(reader, m, f"{where}.meter[{n}]", interval) for n, m in enumerate(meters))
    return BusConfig(url, values, checked)


def _meter(reader: _Reader, raw: Any, where: str, interval: float) -> MeterConfig:
    values = reader.table(raw, where, _METER_KEYS)
    password, source = reader.secret(values, where, "password")
    if password is not None:
        try:
            require_password(password)
        except ValueError as exc:
            raise reader.error(_join(where, source.partition(" ")[0]), f"the password in it: {exc}") from None
    if values["version"] == "v3" and values["b_every"] != 1:
        raise reader.error(_join(where, "b_every"), "V3 meters have no B block")
    return MeterConfig(
        values["address"],
        values["version"],
        interval if values["interval"] is None else values["interval"],
        values["b_every"],
        password or FACTORY_PASSWORD,
        source,
    )


def _store(reader: _Reader, raw: Any) -> StoreConfig:
    values = reader.table(raw, "store", _STORE_KEYS)
    return StoreConfig(reader.file(values["path"]))


def _web(reader: _Reader, raw: Any) -> WebConfig:
    values = reader.table(raw, "web", _WEB_KEYS)
    token, source = reader.secret(values, "web", "token")
    try:
        tokens = parse_tokens(token) if token is not None else {}
    except ValueError as exc:
        raise reader.error(_join("web", source.partition(" ")[0]), str(exc)) from None
    cert, key = values["tls_cert"], values["tls_key"]
    if (cert is None) != (key is None):
        raise reader.error("web", "give tls_cert and tls_key together")
    return WebConfig(
        values["host"],
        values["port"],
        tokens,
        values["allowed_hosts"],
        _checked_file(reader, "web", "tls_cert", cert),
        _checked_file(reader, "web", "tls_key", key),
        values["max_streams"],
    )


def _mqtt(reader: _Reader, raw: Any) -> MqttConfig:
    values = reader.table(raw, "mqtt", _MQTT_KEYS)
    for name, check in (("url", check_url), ("prefix", check_prefix), ("discovery_prefix", check_prefix)):
        try:
            check(values[name])
        except ValueError as exc:
            raise reader.error(_join("mqtt", name), str(exc)) from None
    parts = urlsplit(values["url"])
    if parts.username or parts.password:
        raise reader.error("mqtt.url", "no credentials in the URL: give username and password_file or password_env")
    password, _ = reader.secret(values, "mqtt", "password")
    if password is not None and values["username"] is None:
        raise reader.error("mqtt", "a password needs a username")
    if values["client_key"] is not None and values["client_cert"] is None:
        raise reader.error("mqtt.client_key", "needs client_cert")
    tls = parts.scheme == "mqtts"
    files = {
        name: _checked_file(reader, "mqtt", name, values[name]) for name in ("ca_file", "client_cert", "client_key")
    }
    if not tls and any(files.values()):
        given = next(name for name, path in files.items() if path is not None)
        raise reader.error(_join("mqtt", given), "needs an mqtts:// url")
    return MqttConfig(
        values["url"],
        values["prefix"],
        values["discovery_prefix"],
        files["ca_file"],
        files["client_cert"],
        files["client_key"],
        values["username"],
        password,
        values["commands"],
    )


def _checked_file(reader: _Reader, where: str, name: str, value: str | None) -> Path | None:
    if value is None:
        return None
    try:
        return reader.existing(value)
    except ValueError as exc:
        raise reader.error(_join(where, name), str(exc)) from None


def example() -> str:
    """A commented config that runs as it is, against the built-in simulator."""
    return resources.files(__package__).joinpath("example.toml").read_text(encoding="utf-8")
