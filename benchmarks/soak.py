"""Soak: ``ekm-async poll`` for N minutes against a gateway and a broker that keep going away.

What runs, all as real processes:

* ``ekm-async simulate --tcp``: a paced 9600-baud bus of four V4 meters (the gateway);
* mosquitto with persistence (a broker stopped with SIGTERM keeps its queued messages);
* ``ekm-async poll tcp://… --interval 0 --db soak.db --json --mqtt …``: the process under test;
* a subscriber with a persistent session (QoS 1) that counts every state the broker delivers.

Every 20–60 s (drawn from ``--seed``) the gateway is killed (SIGKILL: a power cut) for 2–15 s and
started again on its port; on its own schedule the broker is stopped (SIGTERM) for 2–15 s. At the end
the poller gets SIGTERM. Printed: the poller's memory (RSS) and CPU over time, and the accounting —
reads printed, rows stored, states delivered, states the poller says it could not deliver — which
must all agree. Run: ``python benchmarks/soak.py --minutes 10``.
"""

from __future__ import annotations

import contextlib
import json
import random
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from _harness import ekm_async_cli, free_port, parser, proc_figures

CLI = ekm_async_cli()
METERS = [f"{300001184 + n:012d}" for n in range(4)]


def wait_port(port: int, limit: float = 15.0) -> None:
    deadline = time.monotonic() + limit
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


class Flapping:
    """A process that is started, and now and then stopped for a while and started again."""

    def __init__(self, name: str, argv: list[str], port: int, stop: signal.Signals, rng: random.Random) -> None:
        self.name, self.argv, self.port, self.stop_signal, self.rng = name, argv, port, stop, rng
        self.process: subprocess.Popen[bytes] | None = None
        self.outages: list[float] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._flap, daemon=True)

    def start(self) -> None:
        self.process = subprocess.Popen(self.argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)

    def flap(self) -> None:
        self._thread.start()

    def _flap(self) -> None:
        while not self._done.wait(self.rng.uniform(20, 60)):
            assert self.process is not None
            self.process.send_signal(self.stop_signal)
            self.process.wait()
            away = self.rng.uniform(2, 15)
            self.outages.append(away)
            if self._done.wait(away):
                break
            self.start()

    def close(self) -> None:
        self._done.set()
        self._thread.join(30)
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


class Subscriber:
    """Every state message the broker delivers, by (address, read time); a persistent session."""

    def __init__(self, port: int) -> None:
        self.states: set[tuple[str, str]] = set()
        self.messages = 0
        self._lock = threading.Lock()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id="ekm-soak-subscriber", clean_session=False
        )
        self.client.on_connect = lambda client, *_: client.subscribe("ekm/+/state", qos=1)
        self.client.on_message = self._message
        self.client.reconnect_delay_set(0.1, 1.0)
        self.client.connect("127.0.0.1", port, keepalive=5)
        self.client.loop_start()

    def _message(self, client: Any, userdata: Any, message: Any) -> None:
        if message.retain:
            return  # a retained copy of a state delivered before
        state = json.loads(message.payload)
        with self._lock:
            self.messages += 1
            self.states.add((state["Meter_Address"], state["time"]))

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@contextlib.contextmanager
def started(flapping: Flapping) -> Iterator[Flapping]:
    flapping.start()
    try:
        yield flapping
    finally:
        flapping.close()


def main() -> None:
    options = parser(__doc__, json_help=None)
    options.add_argument("--minutes", type=float, default=10.0)
    options.add_argument("--seed", type=int, default=1)
    args = options.parse_args()
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="ekm-soak-") as folder:
        where = Path(folder)
        gateway_port, broker_port = free_port(), free_port()
        config = where / "mosquitto.conf"
        config.write_text(
            f"listener {broker_port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
            f"persistence_location {where}/\nautosave_interval 1\nmax_queued_messages 0\n"
        )
        meters = [arg for address in METERS for arg in ("--meter", f"v4:{address}")]
        gateway = Flapping(
            "gateway",
            [*CLI, "simulate", "--tcp", f"127.0.0.1:{gateway_port}", *meters, "--seed", str(args.seed)],
            gateway_port,
            signal.SIGKILL,
            random.Random(rng.random()),
        )
        broker = Flapping(
            "broker", [mosquitto, "-c", str(config)], broker_port, signal.SIGTERM, random.Random(rng.random())
        )
        with started(gateway), started(broker):
            subscriber = Subscriber(broker_port)
            out = (where / "reads.jsonl").open("w")
            err = (where / "stderr.txt").open("w")
            poll = subprocess.Popen(
                [
                    *CLI,
                    "poll",
                    f"tcp://127.0.0.1:{gateway_port}",
                    *METERS,
                    "--interval",
                    "0",
                    "--db",
                    str(where / "soak.db"),
                    "--json",
                    "--mqtt",
                    f"mqtt://127.0.0.1:{broker_port}",
                ],
                stdout=out,
                stderr=err,
            )
            gateway.flap()
            broker.flap()
            samples = []
            began = time.monotonic()
            while (elapsed := time.monotonic() - began) < args.minutes * 60:
                time.sleep(min(10.0, args.minutes * 60 - elapsed))
                cpu, rss = proc_figures(poll.pid)
                samples.append((round(time.monotonic() - began), round(rss / 2**20, 1), round(cpu, 2)))
                print(f"{samples[-1][0]:5d} s  RSS {rss / 2**20:6.1f} MB  CPU {cpu:7.2f} s", flush=True)
            gateway.close()
            broker.close()
            if broker.process is None or broker.process.poll() is not None:
                broker.start()  # the last states get their chance
            stop = time.monotonic()
            poll.send_signal(signal.SIGTERM)
            code = poll.wait(60)
            took = time.monotonic() - stop
            time.sleep(2.0)  # the subscriber takes what is left
            subscriber.close()
            out.close()
            err.close()
        printed = [json.loads(line) for line in (where / "reads.jsonl").read_text().splitlines()]
        with contextlib.closing(sqlite3.connect(where / "soak.db")) as db:
            stored = {(a, t) for a, t in db.execute('SELECT "Meter_Address", time_utc FROM reads')}
            rows = db.execute("SELECT COUNT(*) FROM reads").fetchone()[0]
        stderr = (where / "stderr.txt").read_text()
        undelivered = re.search(r"error: (\d+) MQTT states were not delivered", stderr)
        printed_keys = {(r["Meter_Address"], r["time"]) for r in printed}
        summary = {
            "minutes": args.minutes,
            "reads_printed": len(printed),
            "rows_stored": rows,
            "printed_and_stored_agree": len(stored) == rows == len(printed),
            "states_delivered": len(subscriber.states & printed_keys),
            "states_reported_undelivered": int(undelivered[1]) if undelivered else 0,
            "states_missing_unreported": len(printed_keys - subscriber.states)
            - (int(undelivered[1]) if undelivered else 0),
            "mqtt_messages": subscriber.messages,
            "gateway_outages": len(gateway.outages),
            "broker_outages": len(broker.outages),
            "exit_status": code,
            "stop_seconds": round(took, 2),
            "rss_mb_first_last_max": (samples[0][1], samples[-1][1], max(s[1] for s in samples)),
            "cpu_percent": round(100 * samples[-1][2] / samples[-1][0], 2),
            "tracebacks": stderr.count("Traceback"),
            "stderr_lines": len(stderr.splitlines()),
        }
        print(json.dumps(summary, indent=2))
        print("last stderr lines:\n" + "".join(stderr.splitlines(keepends=True)[-8:]))


if __name__ == "__main__":
    main()
