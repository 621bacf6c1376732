"""pytest fixtures for applications built on ekm-async, active once ekm-async is installed (its
``pytest11`` entry point). They need pytest-asyncio ≥ 1.0 (``pip install 'ekm-async[testing]'``) and
work in its auto and strict modes alike.

* ``ekm_sim`` — a running simulated RS-485 bus behind a TCP gateway on 127.0.0.1 (a
  :class:`SimulatedBus`): two V4 meters and a V3 meter by default, unpaced (replies at once). Its
  ``url`` opens with :func:`ekm_async.open_bus`; ``addresses``; ``transactions`` (what the meters were
  asked and answered); ``inject(fault)`` and ``clear_faults()``; ``set(address, volts=…, amps=…,
  pf=…, kwh=…)`` changes what a meter measures; ``model(address)`` is the simulated meter itself.
* ``ekm_bus`` — an open :class:`ekm_async.Bus` on it, with timeouts fit for the simulator.

Per test::

    @pytest.mark.ekm_sim(meters=["v4:000300001184", "v3:000000001234"], faults=["crc=0.1"],
                         baud=9600, arrival="bytes", time_scale=0)
    async def test_my_app(ekm_sim, ekm_bus): ...

``meters``: ``"v4:ADDRESS"``/``"v3:ADDRESS"``, a bare address (V4), or
:class:`~ekm_async.sim.MeterModel`; ``faults``: :class:`~ekm_async.sim.Fault` or specs as
``ekm-async simulate --fault`` takes them; ``baud``: 0 (default: unpaced) or 9600 (as the real wire);
``arrival``: how the host receives the bytes (``bytes``, ``slices``, ``ftdi``, ``ser2net``,
``idle:N``); ``turnaround`` (seconds); ``echo`` (the adapter's local echo); ``time_scale``: 0 freezes
every value (nothing wanders, no energy accumulates), 1 is real time. Every port and task the
fixtures open is closed when the test ends.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest

from ..bus import Bus, open_bus
from ..sim import ARRIVALS, Arrival, Fault, MeterModel, MeterType, SimBus, SimServer, Transaction
from ..wire import require_address

__all__ = ["DEFAULT_METERS", "SimulatedBus", "ekm_bus", "ekm_sim"]

DEFAULT_METERS = ("v4:000300001184", "v4:000300001185", "v3:000000001234")
"""The meters of ``ekm_sim`` unless a test's marker says otherwise."""
_OPTIONS = {"meters", "faults", "baud", "arrival", "turnaround", "echo", "time_scale", "seed"}
_N = TypeVar("_N", int, float)
_MARKER = (
    "ekm_sim(meters=..., faults=..., baud=0, arrival=None, turnaround=0.001, echo=False, time_scale=1.0, "
    "seed=0): the simulated bus of the ekm_sim and ekm_bus fixtures (ekm_async.testing.pytest_plugin)"
)


@dataclass
class SimulatedBus:
    """The running simulated bus of ``ekm_sim``."""

    url: str
    """``tcp://127.0.0.1:PORT``: what :func:`ekm_async.open_bus` opens."""
    sim: SimBus
    server: SimServer
    bus_options: dict[str, Any] = field(default_factory=dict)
    """:func:`ekm_async.open_bus` options that fit this simulator (what ``ekm_bus`` uses)."""

    @property
    def addresses(self) -> list[str]:
        return [m.address for m in self.sim.meters]

    @property
    def transactions(self) -> list[Transaction]:
        """The transactions served, in order (the latest 1000 at least): the request, the meter that
        answered, the reply, the faults applied."""
        return self.sim.transactions

    def model(self, address: str) -> MeterModel:
        """The simulated meter at ``address`` (``KeyError`` if there is none)."""
        return self.sim.meter(address)

    def set(self, address: str, **values: Any) -> None:
        """Change what meter ``address`` measures: ``volts``, ``amps``, ``pf``, ``kwh`` (forward, per
        line), on ``line`` 1–3 or every line (:meth:`~ekm_async.sim.MeterModel.set_values`)."""
        self.model(address).set_values(**values)

    def inject(self, fault: Fault | str) -> None:
        """Apply a fault from now on: a :class:`~ekm_async.sim.Fault` or its spec (``"crc=0.2"``,
        ``"dead@000300001185"``, ``"drop#1"``)."""
        self.sim.add_fault(fault if isinstance(fault, Fault) else Fault.parse(fault))

    def clear_faults(self) -> None:
        self.sim.clear_faults()


def _meter(spec: str | MeterModel, n: int, time_scale: float) -> MeterModel:
    if isinstance(spec, MeterModel):
        return spec
    version, _, address = spec.rpartition(":")
    kinds = {"v4": MeterType.V4, "v3": MeterType.V3, "": MeterType.V4}
    if version not in kinds:
        raise ValueError(f"meters: {spec!r} is not v4:ADDRESS, v3:ADDRESS or an address")
    return MeterModel(require_address(address), kinds[version], seed=n, time_scale=time_scale)


def _arrival(spec: str | Arrival | None) -> Arrival | None:
    if spec is None or isinstance(spec, Arrival):
        return spec
    return ARRIVALS[spec] if spec in ARRIVALS else Arrival.parse(spec)


def _number(options: dict[str, Any], name: str, default: _N, kind: type[_N]) -> _N:
    """A marker's numeric option (``ValueError`` naming it, where ``int()`` would say 'invalid literal')."""
    value = options.get(name, default)
    try:
        return kind(value)
    except (TypeError, ValueError):
        what = "a whole number" if kind is int else "a number"
        raise ValueError(f"{name} must be {what}; got {value!r}") from None


def simulated_bus(options: dict[str, Any]) -> tuple[SimBus, dict[str, Any]]:
    """The :class:`~ekm_async.sim.SimBus` of a marker's options, and the bus options that fit it."""
    unknown = set(options) - _OPTIONS
    if unknown:
        pytest.fail(f"ekm_sim: unknown option(s) {sorted(unknown)}; options: {sorted(_OPTIONS)}", pytrace=False)
    try:
        time_scale = _number(options, "time_scale", 1.0, float)
        meters: Iterable[str | MeterModel] = options.get("meters", DEFAULT_METERS)
        models = [_meter(spec, n, time_scale) for n, spec in enumerate(meters)]
        faults = [f if isinstance(f, Fault) else Fault.parse(f) for f in options.get("faults", ())]
        baud = _number(options, "baud", 0, int)
        sim = SimBus(
            models,
            baud=baud,
            turnaround=_number(options, "turnaround", 0.001, float),
            echo=options.get("echo", False),
            arrival=_arrival(options.get("arrival")),
            faults=faults,
            seed=_number(options, "seed", 0, int),
        )
    except (ValueError, TypeError, KeyError) as exc:  # the marker's words, not a traceback
        pytest.fail(f"ekm_sim: {exc}", pytrace=False)
    # Unpaced, the wire takes no time: a fast line and a short margin (a loaded CI machine's turns of the
    # event loop are within it) keep a silent meter's timeout short.
    bus_options = {"baud": baud or 1_000_000, "timeout_margin": 0.2, "reconnect_delay": 0.05}
    return sim, bus_options


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", _MARKER)


try:
    import pytest_asyncio as _pytest_asyncio
except ImportError:  # the fixtures say what is missing when a test asks for them
    _pytest_asyncio = None  # type: ignore[assignment]


def _async_fixture(function: Callable[..., Any]) -> Any:
    """``pytest_asyncio.fixture`` (works in its auto and strict modes), or without pytest-asyncio a
    fixture that says so."""
    if _pytest_asyncio is not None:
        return _pytest_asyncio.fixture(function)

    @pytest.fixture(name=function.__name__)
    def missing() -> None:
        pytest.fail(f"the {function.__name__} fixture needs pytest-asyncio: pip install 'ekm-async[testing]'")

    return missing


@_async_fixture
async def ekm_sim(request: pytest.FixtureRequest) -> AsyncIterator[SimulatedBus]:
    """A running simulated bus (see the module documentation)."""
    marker = request.node.get_closest_marker("ekm_sim")
    sim, bus_options = simulated_bus(dict(marker.kwargs) if marker is not None else {})
    async with SimServer(sim) as server:
        host, port = await server.start_tcp("127.0.0.1", 0)
        yield SimulatedBus(f"tcp://{host}:{port}", sim, server, bus_options)


@_async_fixture
async def ekm_bus(ekm_sim: SimulatedBus) -> AsyncIterator[Bus]:
    """An open bus on ``ekm_sim``."""
    async with open_bus(ekm_sim.url, **ekm_sim.bus_options) as bus:
        yield bus
