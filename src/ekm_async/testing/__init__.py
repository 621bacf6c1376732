"""A kit for testing applications built on ekm-async (``pip install 'ekm-async[testing]'``).

* :mod:`ekm_async.testing.strategies` — hypothesis strategies: valid frames of every block kind,
  realistic damage, arrival pieces, decoded reads, request frames.
* :mod:`ekm_async.testing.pytest_plugin` — pytest fixtures, active once ekm-async is installed
  (entry point ``pytest11``): ``ekm_sim`` (a running simulated bus) and ``ekm_bus`` (a bus open on
  it), configured per test with ``@pytest.mark.ekm_sim(...)``.

The README's "Testing your application" and ``examples/testing/`` show both.
"""

from __future__ import annotations

__all__: list[str] = []
