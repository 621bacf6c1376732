from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("default", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("default")

VECTORS = Path(__file__).resolve().parents[1] / "tests" / "vectors"


@pytest.fixture(scope="session")
def captured() -> dict[str, Any]:
    """The real V4 A frame of ../shared/vectors/captured_v4a.json (copied into tests/vectors)."""
    return json.loads((VECTORS / "captured_v4a.json").read_text())


@pytest.fixture(scope="session")
def frame_a(captured: dict[str, Any]) -> bytes:
    return bytes.fromhex(captured["frame_hex"])
