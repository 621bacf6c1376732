"""The vendor side of ``bench_scale.py``: ``_vendor_poll.py`` (ekmmeters 0.2.5) with its CPU time measured.

Runs in the vendor's environment (``benchmarks/.venv-ekmmeters``), started as

    .venv-ekmmeters/bin/python benchmarks/_scale_vendor.py PORT SECONDS ADDRESS [ADDRESS …]

Runs ``_vendor_poll.main`` unchanged (``SerialPort(PORT, 9600)`` with the vendor's default
``force_wait``, ``V4Meter.request()`` on the meters in turn for SECONDS) and prints its JSON report
with three more keys: ``cpu_s`` (this process's user + system CPU seconds during the polling, imports
excluded), ``cpu_us_per_read`` and ``maxrss_kib``.
"""

from __future__ import annotations

import contextlib
import io
import json
import resource
import sys
import time

import _vendor_poll


def main(argv: list[str]) -> int:
    out = io.StringIO()
    cpu = time.process_time()
    with contextlib.redirect_stdout(out):
        status = _vendor_poll.main(argv)
    cpu = time.process_time() - cpu
    if status != 0:
        sys.stdout.write(out.getvalue())
        return status
    report = json.loads(out.getvalue())
    report["cpu_s"] = cpu
    report["cpu_us_per_read"] = cpu / report["reads"] * 1e6 if report["reads"] else None
    report["maxrss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
