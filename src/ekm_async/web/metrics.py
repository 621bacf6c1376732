"""Prometheus metrics of a poller and its buses, read from their live counters at every scrape."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from ..bus import Bus
from ..exchange import LATENCY_BUCKETS
from ..poller import Meter, Poller
from ..store import SqliteStore

__all__ = ["EkmCollector", "bus_names", "bus_of", "public_text", "registry_for"]


def bus_of(meter: Meter) -> Bus:
    """The :class:`~ekm_async.Bus` of a polled meter (the service reports on ekm-async buses only)."""
    bus = meter.bus
    if not isinstance(bus, Bus):
        raise TypeError(f"meter {meter.address} is not on an ekm_async Bus: {bus!r}")
    return bus


def bus_names(poller: Poller) -> dict[int, str]:
    """Each bus's public name by ``id(bus)``: its ``name`` option, else ``bus1``, ``bus2``… in the
    order of the poller's meters (never its URL: a gateway's address is not for the public)."""
    names: dict[int, str] = {}
    for meter in poller.meters():
        bus = bus_of(meter)
        if id(bus) not in names:
            names[id(bus)] = bus.options.name or f"bus{len(names) + 1}"
    return names


def public_text(poller: Poller, text: str) -> str:
    """``text`` (an error message) with where each bus is — its URL, its host and port, its host — said
    as the bus's name: for whoever lacks the token."""
    names = bus_names(poller)
    for meter in poller.meters():
        bus = bus_of(meter)
        name = names[id(bus)]
        parts = urlsplit(bus.url)
        for where in (bus.url, parts.netloc, parts.path if not parts.netloc else "", parts.hostname or ""):
            if where and len(where) > 2:
                text = text.replace(where, name)
    return text


class EkmCollector(Collector):
    """Frames ok and rejected by reason, timeouts, retries, reconnects, NAKs and transactions per bus;
    reads and failed reads per meter; whether a meter is backed off; the exchange latency histogram."""

    def __init__(self, poller: Poller, store: SqliteStore | None = None) -> None:
        self.poller = poller
        self.store = store

    def _buses(self) -> list[tuple[str, Bus]]:
        seen: dict[int, Bus] = {}
        for meter in self.poller.meters():
            seen.setdefault(id(meter.bus), bus_of(meter))
        names = bus_names(self.poller)
        return [(names[key], bus) for key, bus in seen.items()]

    def collect(self) -> Iterator[Metric]:
        buses = self._buses()
        names = bus_names(self.poller)
        counters = {
            "frames_ok": ("ekm_frames_ok", "Blocks accepted: valid, from the meter asked, of the kind asked."),
            "timeouts": ("ekm_timeouts", "Exchanges that got no (valid) reply in time."),
            "retries": ("ekm_retries", "Reads asked again after a timeout or a bad frame."),
            "reconnects": ("ekm_reconnects", "Times the bus reconnected to its port or gateway."),
            "naks": ("ekm_naks", "NAK replies."),
            "transactions": ("ekm_transactions", "Transactions (connect … close) run on the bus."),
        }
        for attribute, (metric, doc) in counters.items():
            family = CounterMetricFamily(metric, doc, labels=["bus"])
            for name, bus in buses:
                family.add_metric([name], getattr(bus.stats, attribute))
            yield family
        rejected = CounterMetricFamily("ekm_frames_rejected", "Bytes rejected, by reason.", labels=["bus", "reason"])
        for name, bus in buses:
            for reason, count in sorted(bus.stats.rejected.items()):
                rejected.add_metric([name, reason], count)
        yield rejected
        anomalous = CounterMetricFamily(
            "ekm_frames_anomalous",
            "Blocks delivered flagged: a byte only a guess expects was not there (by check).",
            labels=["bus", "check"],
        )
        for name, bus in buses:
            for check, count in sorted(bus.stats.anomalies.items()):
                anomalous.add_metric([name, check], count)
        yield anomalous
        connected = GaugeMetricFamily("ekm_bus_connected", "1 while the bus has its port or gateway.", labels=["bus"])
        down = GaugeMetricFamily(
            "ekm_bus_down_seconds", "Seconds since the bus lost its port or gateway (0 while up).", labels=["bus"]
        )
        outage = GaugeMetricFamily(
            "ekm_bus_outage", "1 while the bus has been down longer than a read takes on the wire.", labels=["bus"]
        )
        for name, bus in buses:
            health = bus.health()
            connected.add_metric([name], 1 if bus.connected else 0)
            down.add_metric([name], health.down_seconds)
            outage.add_metric([name], 1 if health.outage else 0)
        yield from (connected, down, outage)
        latency = HistogramMetricFamily(
            "ekm_exchange_latency_seconds", "Seconds from a request to its reply.", labels=["bus"]
        )
        for name, bus in buses:
            cumulative, running = [], 0
            for bound, count in zip((*map(str, LATENCY_BUCKETS), "+Inf"), bus.stats.exchange_buckets, strict=True):
                running += count
                cumulative.append((bound, running))
            latency.add_metric([name], cumulative, bus.stats.exchange_seconds)
        yield latency
        reads = CounterMetricFamily("ekm_reads", "Successful reads, per meter.", labels=["meter", "bus"])
        errors = CounterMetricFamily("ekm_read_errors", "Failed reads, per meter.", labels=["meter", "bus"])
        available = GaugeMetricFamily("ekm_meter_available", "0 while a meter is backed off.", labels=["meter", "bus"])
        for address, status in self.poller.status().items():
            bus = bus_of(self.poller.meter(address))
            labels = [address, names[id(bus)]]
            reads.add_metric(labels, status.ok)
            errors.add_metric(labels, status.errors)
            available.add_metric(labels, 1 if bus.available(address) else 0)
        yield from (reads, errors, available)
        if self.store is not None:
            yield from self._store(self.store)

    @staticmethod
    def _store(store: SqliteStore) -> Iterator[Metric]:
        path = [Path(store.path).name]  # the file's name: where it lives is not for the public
        families = (
            (CounterMetricFamily, "ekm_store_committed", "Reads committed to the database.", store.committed),
            (GaugeMetricFamily, "ekm_store_pending", "Reads accepted, not yet committed.", store.pending),
            (CounterMetricFamily, "ekm_store_lost", "Reads that will never be committed.", store.lost),
            (CounterMetricFamily, "ekm_store_failed_commits", "Commits that failed.", store.failed_commits),
            (GaugeMetricFamily, "ekm_store_failing", "1 while commits fail.", int(store.commit_error is not None)),
        )
        for kind, name, doc, value in families:
            family = kind(name, doc, labels=["db"])
            family.add_metric(path, value)
            yield family


def registry_for(poller: Poller, store: SqliteStore | None = None) -> CollectorRegistry:
    """A registry of its own (several apps in one process do not clash) holding the poller's metrics
    (and the store's, if given)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(EkmCollector(poller, store))
    return registry
