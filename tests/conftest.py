from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from .realparts import pty_pair, ser2net  # noqa: F401 — the real parts' fixtures, for every test

settings.register_profile("default", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("default")

VECTORS = Path(__file__).resolve().parents[1] / "tests" / "vectors"


@pytest.fixture(scope="session")
def captured() -> dict[str, Any]:
    """A real V4 A frame captured from a meter (tests/vectors/captured_v4a.json)."""
    return json.loads((VECTORS / "captured_v4a.json").read_text())


@pytest.fixture(scope="session")
def frame_a(captured: dict[str, Any]) -> bytes:
    return bytes.fromhex(captured["frame_hex"])


# ---------------------------------------------------------------------------------------------------
# Slow scenarios that mostly wait (a paced wire, the vendor's sleeps) start with the session, each in a
# thread, and run alongside the rest of the suite; their tests take the outcome when they come.

_EARLY: dict[str, tuple[str, Callable[[pytest.TempPathFactory], Any]]] = {}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The reliability matrices last: they measure throughput and stop times against twins on the same
    machine, and should not share it with the early scenarios' start (a virtualenv being installed)."""
    items.sort(key=lambda item: "reliability" in item.nodeid.split("::")[0].split("/"))


def early(name: str) -> Callable[[Callable[[pytest.TempPathFactory], Any]], Callable[[pytest.TempPathFactory], Any]]:
    """Register a scenario (a function of the session's ``tmp_path_factory``) to start with the session,
    if a test of its module is selected; ``early_runs.result(name)`` is its outcome."""

    def register(scenario: Callable[[pytest.TempPathFactory], Any]) -> Callable[[pytest.TempPathFactory], Any]:
        _EARLY[name] = (scenario.__module__, scenario)
        return scenario

    return register


class EarlyRuns:
    def __init__(self, futures: dict[str, Future[Any]]) -> None:
        self._futures = futures

    def result(self, name: str, timeout: float = 280) -> Any:
        return self._futures[name].result(timeout)


@pytest.fixture(scope="session", autouse=True)
def early_runs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EarlyRuns]:
    selected = {item.module.__name__ for item in request.session.items if item.module is not None}
    chosen = {name: scenario for name, (module, scenario) in _EARLY.items() if module in selected}
    # The session's base temporary directory is made lazily and not thread-safely: make it before the
    # threads start, or a thread's mktemp and a test's tmp_path may each make one (and the first fails).
    tmp_path_factory.getbasetemp()
    with ThreadPoolExecutor(max_workers=max(1, len(chosen)), thread_name_prefix="early") as pool:
        yield EarlyRuns({name: pool.submit(scenario, tmp_path_factory) for name, scenario in chosen.items()})
