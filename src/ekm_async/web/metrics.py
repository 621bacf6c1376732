"""Prometheus metrics of a poller and its buses, read from their live counters at every scrape."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from ..bus import Bus
from ..exchange import LATENCY_BUCKETS
from ..poller import Meter, Poller
from ..store import SqliteStore

__all__ = ["EkmCollector", "bus_of", "registry_for"]


def bus_of(meter: Meter) -> Bus:
    """The :class:`~ekm_async.Bus` of a polled meter (the service reports on ekm-async buses only)."""
    bus = meter.bus
    if not isinstance(bus, Bus):
        raise TypeError(f"meter {meter.address} is not on an ekm_async Bus: {bus!r}")
    return bus


class EkmCollector(Collector):
    """Frames ok and rejected by reason, timeouts, retries, reconnects, NAKs and transactions per bus;
    reads and failed reads per meter; whether a meter is backed off; the exchange latency histogram."""

    def __init__(self, poller: Poller, store: SqliteStore | None = None) -> None:
        self.poller = poller
        self.store = store

    def _buses(self) -> list[Bus]:
        seen: dict[int, Bus] = {}
        for meter in self.poller.meters():
            seen.setdefault(id(meter.bus), bus_of(meter))
        return list(seen.values())

    def collect(self) -> Iterator[Metric]:
        buses = self._buses()
        counters = {
            "frames_ok": ("ekm_frames_ok", "Blocks accepted: valid, from the meter asked, of the kind asked."),
            "timeouts": ("ekm_timeouts", "Exchanges that got no (valid) reply in time."),
            "retries": ("ekm_retries", "Reads asked again after a timeout or a bad frame."),
            "reconnects": ("ekm_reconnects", "Times the bus reconnected to its port or gateway."),
            "naks": ("ekm_naks", "NAK replies."),
            "transactions": ("ekm_transactions", "Transactions (connect … close) run on the bus."),
        }
        for attribute, (name, doc) in counters.items():
            family = CounterMetricFamily(name, doc, labels=["bus"])
            for bus in buses:
                family.add_metric([bus.url], getattr(bus.stats, attribute))
            yield family
        rejected = CounterMetricFamily("ekm_frames_rejected", "Bytes rejected, by reason.", labels=["bus", "reason"])
        for bus in buses:
            for reason, count in sorted(bus.stats.rejected.items()):
                rejected.add_metric([bus.url, reason], count)
        yield rejected
        anomalous = CounterMetricFamily(
            "ekm_frames_anomalous",
            "Blocks delivered flagged: a byte only a guess expects was not there (by check).",
            labels=["bus", "check"],
        )
        for bus in buses:
            for check, count in sorted(bus.stats.anomalies.items()):
                anomalous.add_metric([bus.url, check], count)
        yield anomalous
        connected = GaugeMetricFamily("ekm_bus_connected", "1 while the bus has its port or gateway.", labels=["bus"])
        down = GaugeMetricFamily(
            "ekm_bus_down_seconds", "Seconds since the bus lost its port or gateway (0 while up).", labels=["bus"]
        )
        outage = GaugeMetricFamily(
            "ekm_bus_outage", "1 while the bus has been down longer than a read takes on the wire.", labels=["bus"]
        )
        for bus in buses:
            health = bus.health()
            connected.add_metric([bus.url], 1 if bus.connected else 0)
            down.add_metric([bus.url], health.down_seconds)
            outage.add_metric([bus.url], 1 if health.outage else 0)
        yield from (connected, down, outage)
        latency = HistogramMetricFamily(
            "ekm_exchange_latency_seconds", "Seconds from a request to its reply.", labels=["bus"]
        )
        for bus in buses:
            cumulative, running = [], 0
            for bound, count in zip((*map(str, LATENCY_BUCKETS), "+Inf"), bus.stats.exchange_buckets, strict=True):
                running += count
                cumulative.append((bound, running))
            latency.add_metric([bus.url], cumulative, bus.stats.exchange_seconds)
        yield latency
        reads = CounterMetricFamily("ekm_reads", "Successful reads, per meter.", labels=["meter", "bus"])
        errors = CounterMetricFamily("ekm_read_errors", "Failed reads, per meter.", labels=["meter", "bus"])
        available = GaugeMetricFamily("ekm_meter_available", "0 while a meter is backed off.", labels=["meter", "bus"])
        for address, status in self.poller.status().items():
            bus = bus_of(self.poller.meter(address))
            reads.add_metric([address, status.bus], status.ok)
            errors.add_metric([address, status.bus], status.errors)
            available.add_metric([address, status.bus], 1 if bus.available(address) else 0)
        yield from (reads, errors, available)
        if self.store is not None:
            yield from self._store(self.store)

    @staticmethod
    def _store(store: SqliteStore) -> Iterator[Metric]:
        path = [store.path]
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
