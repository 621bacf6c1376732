"""Meter handles: every read and every setting of protocol.md §2.2 as an awaitable method.

Each call is one transaction on the bus. A setter encodes its request first — a bad argument raises
``ValueError`` and nothing is queued — then runs connect → password → write → close; the write is
sent only after the password was acknowledged (else :class:`Refused`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from . import audit, catalogue
from .blocks import Block, HolidaysBlock, LiveBlock, MonthsBlock, Read, SchedulesBlock
from .catalogue import Effect, SettingSpec
from .commands import PAGE_BLOCK, LiveRead, SettingsPage
from .layouts import BlockKind
from .model import (
    CTRatio,
    LcdItem,
    MaxDemandPeriod,
    MaxDemandResetInterval,
    MonthDay,
    Period,
    PulseInput,
    PulseOutputRatio,
    Relay,
    RelayState,
    Season,
)
from .wire import require_address, require_password

__all__ = ["Link", "Settings", "Transaction", "V3Meter", "V4Meter"]

T = TypeVar("T")


class Transaction(Protocol):
    """One transaction with one meter, as a meter handle runs it (a :class:`~ekm_async.Bus` gives it):
    each call is one exchange on the wire, kept to the session rules."""

    async def sign_on(self, read: LiveRead, kind: BlockKind) -> LiveBlock:
        """Connect: the V3 or V4 A read (the V4 B read carries the address too)."""

    async def read_b(self, kwh_scale: int) -> LiveBlock:
        """The V4 B block."""

    async def settings(self, page: SettingsPage, kind: BlockKind, kwh_scale: int) -> Block:
        """A settings block."""

    async def password(self, password: str) -> None:
        """The password, acknowledged (else :class:`~ekm_async.Refused`)."""

    async def write(self, request: bytes) -> None:
        """A write, acknowledged (else :class:`~ekm_async.Refused`); only after an acknowledged password."""


class Link(Protocol):
    """What a meter handle needs of its bus."""

    url: str

    async def transact(self, address: str, run: Callable[[Transaction], Awaitable[T]], *, idempotent: bool) -> T:
        """Run ``run`` as one transaction with meter ``address``, in turn with every other caller."""

    def readdress(self, old: str, new: str) -> None:
        """Meter ``old`` now answers at ``new``."""

    def wrote(self, record: audit.WriteRecord) -> None:
        """A write was asked for (whatever came of it): the bus's write listeners hear of it."""


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything ``read_settings`` reads, in one session."""

    read: Read
    """The sign-on read that opened the session."""
    months_forward: MonthsBlock
    months_reverse: MonthsBlock
    schedules: SchedulesBlock
    """Schedules 1–4 and the seasons."""
    schedules_5_8: SchedulesBlock
    holidays: HolidaysBlock
    """Holidays with the weekend and holiday schedules."""

    def blocks(self) -> dict[str, Block]:
        return {
            "months_forward": self.months_forward,
            "months_reverse": self.months_reverse,
            "schedules": self.schedules,
            "schedules_5_8": self.schedules_5_8,
            "holidays": self.holidays,
        }


# The settings pages, in the order ekmmeters reads them (the block each returns: commands.PAGE_BLOCK).
_PAGES = (
    ("holidays", SettingsPage.HOLIDAYS),
    ("months_forward", SettingsPage.MONTHS_FORWARD),
    ("months_reverse", SettingsPage.MONTHS_REVERSE),
    ("schedules", SettingsPage.SCHEDULES_1_4),
    ("schedules_5_8", SettingsPage.SCHEDULES_5_8),
)


class _Meter:
    """What V3 and V4 meters share."""

    _SIGN_ON: LiveRead
    _KIND: BlockKind

    def __init__(self, bus: Link, address: str, *, password: str) -> None:
        self.bus = bus
        self.address = require_address(address)
        self.password = require_password(password)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.address!r})"

    async def _sign_on(self, tx: Transaction) -> LiveBlock:
        return await tx.sign_on(self._SIGN_ON, self._KIND)

    async def read(self) -> Read:
        raise NotImplementedError

    async def read_settings(self) -> Settings:
        """Months forward and reverse, schedules 1–8 and seasons, holidays and weekend/holiday schedules."""

        async def run(tx: Transaction) -> Settings:
            a = await self._sign_on(tx)
            blocks = {name: await tx.settings(page, PAGE_BLOCK[page], a.kwh_scale) for name, page in _PAGES}
            return Settings(Read.of(a, time=datetime.now(UTC)), **blocks)  # type: ignore[arg-type]

        return await self.bus.transact(self.address, run, idempotent=True)

    async def _write(
        self, request: bytes, password: str | None, acknowledged: Callable[[], None] | None = None
    ) -> None:
        """connect → password → ``request`` → close; raises :class:`Refused` without an ACK.
        ``acknowledged`` runs on the ACK, within the transaction: before anything queued behind it."""
        given = require_password(password) if password is not None else None

        async def run(tx: Transaction) -> None:
            await self._sign_on(tx)
            # the handle's password as it is when the write runs: one changed by a write queued before it counts
            await tx.password(given if given is not None else self.password)
            await tx.write(request)
            if acknowledged is not None:
                acknowledged()

        try:
            await self.bus.transact(self.address, run, idempotent=False)
        finally:
            self._written()  # even unacknowledged, the write may have been applied

    def _written(self) -> None:
        """A write changed the meter (V4: its cached B block is stale)."""

    async def apply(
        self, setting: str | SettingSpec, /, *, password: str | None = None, actor: str = "api", **arguments: Any
    ) -> None:
        """Write ``setting`` (a name of :data:`~ekm_async.catalogue.SETTINGS`, e.g. ``"ct-ratio"``) with
        its ``arguments``: connect → password → write → close. Every argument is checked first
        (``ValueError``, nothing sent); :class:`Refused` if the meter does not acknowledge. ``actor``:
        who asks, for the audit trail (:mod:`ekm_async.audit`), which records every call."""
        name = setting if isinstance(setting, str) else setting.name
        meter, changes = self.address, {}
        try:
            spec = catalogue.setting(setting) if isinstance(setting, str) else setting
            if spec.v4_only and not isinstance(self, V4Meter):
                raise ValueError(f"{spec.name} is a V4 setting; meter {self.address} is a V3")

            def took_effect() -> None:  # the meter acknowledged: from now on it is as written
                if spec.effect is Effect.PASSWORD:
                    self.password = arguments["new_password"]
                    changes["password"] = "changed: the new one is held by this process only"
                elif spec.effect is Effect.ADDRESS:
                    old, self.address = self.address, arguments["new_address"]
                    self.bus.readdress(old, self.address)  # with what is queued for it
                    changes["address"] = self.address

            await self._write(spec.request(**arguments), password, took_effect)
        except BaseException as exc:
            self._audit(meter, name, arguments, actor=actor, error=exc, changes=changes)
            raise
        self._audit(meter, name, arguments, actor=actor, error=None, changes=changes)

    def _audit(
        self,
        meter: str,
        setting: str,
        arguments: dict[str, Any],
        *,
        actor: str,
        error: BaseException | None,
        changes: dict[str, str],
    ) -> None:
        """One record of a write on the audit trail: logged, and handed to the bus's listeners."""
        outcome = audit.outcome_of(error)
        text = "" if error is None else (str(error) or type(error).__name__)
        record = audit.WriteRecord(
            datetime.now(UTC), meter, setting, audit.redacted(arguments), actor, outcome, text, changes
        )
        # INFO, every one: the caller hears of a failure by its exception; an application that wants the
        # trail shows this logger (the service commands do, on stderr).
        audit.log.info("%s", record.message())
        if "password" in changes:
            audit.log.info(
                "meter %s has a new password, held by this process only: put it where the meter's password is "
                "configured (password_file, password_env, --password-file, $EKM_PASSWORD), or the next start "
                "uses the old one",
                meter,
            )
        if "address" in changes:
            audit.log.info(
                "meter %s now answers at %s, and is polled there: put the new address where the meter is "
                "configured, or the next start asks the old one",
                meter,
                changes["address"],
            )
        self.bus.wrote(record)

    # Named setters (docs/protocol.md §2.2: W1–W16), each one entry of the settings catalogue.

    async def set_max_demand_period(self, period: MaxDemandPeriod | int | str, *, password: str | None = None) -> None:
        """W6: 15, 30 or 60 minutes (``Max_Demand_Period`` reads back the minutes)."""
        await self.apply("max-demand-period", period=period, password=password)

    async def reset_max_demand(self, *, password: str | None = None) -> None:
        """W7: reset max demand now."""
        await self.apply("max-demand-reset-now", password=password)

    async def set_time(self, when: datetime | None = None, *, password: str | None = None) -> None:
        """W9: set the meter clock (default: this computer's local time now). A meter keeps wall-clock
        time without a zone: an aware ``when`` is first converted to this computer's local time."""
        await self.apply("time", when=when, password=password)

    async def set_ct_ratio(self, ratio: CTRatio | int | str, *, password: str | None = None) -> None:
        """W10: current-transformer ratio."""
        await self.apply("ct-ratio", ratio=ratio, password=password)

    async def set_schedule(
        self, schedule: int, periods: Sequence[Period | tuple[int, int, int]], *, password: str | None = None
    ) -> None:
        """W11: schedule 1–8 (read back as ``Schedule_{schedule}_…``), up to 4 periods: from hour:minute
        on, tariff 1–4."""
        await self.apply("schedule", schedule=schedule, periods=periods, password=password)

    async def set_seasons(
        self, seasons: Sequence[Season | tuple[int, int, int]], *, password: str | None = None
    ) -> None:
        """W12: up to 4 seasons (start month, start day, schedule 1–8)."""
        await self.apply("seasons", seasons=seasons, password=password)

    async def set_holidays(self, dates: Sequence[MonthDay | tuple[int, int]], *, password: str | None = None) -> None:
        """W13: up to 20 holidays (month, day)."""
        await self.apply("holidays", dates=dates, password=password)

    async def set_weekend_holiday_schedules(self, weekend: int, holiday: int, *, password: str | None = None) -> None:
        """W14: the schedules (1–8) used on weekends and on holidays."""
        await self.apply("weekend-holiday-schedules", weekend=weekend, holiday=holiday, password=password)

    async def set_password(self, new_password: str, *, password: str | None = None) -> None:
        """W15: a new 8-digit password; this handle uses it from now on."""
        await self.apply("password", new_password=new_password, password=password)

    async def set_address(self, new_address: str, *, password: str | None = None) -> None:
        """W16: a new 12-digit address; this handle follows the meter to it."""
        await self.apply("address", new_address=new_address, password=password)


class V3Meter(_Meter):
    """A V3 Omnimeter on a bus."""

    _SIGN_ON = LiveRead.V3
    _KIND = BlockKind.V3

    async def read(self) -> Read:
        """The V3 block."""

        async def run(tx: Transaction) -> Read:
            return Read.of(await self._sign_on(tx), time=datetime.now(UTC))

        return await self.bus.transact(self.address, run, idempotent=True)


class V4Meter(_Meter):
    """A V4 (or V5) Omnimeter on a bus."""

    _SIGN_ON = LiveRead.V4A
    _KIND = BlockKind.V4A

    def __init__(self, bus: Link, address: str, *, password: str, b_every: int = 1) -> None:
        super().__init__(bus, address, password=password)
        if isinstance(b_every, bool) or not isinstance(b_every, int) or b_every < 1:
            raise ValueError(f"b_every must be an integer ≥ 1; got {b_every!r}")
        self.b_every = b_every
        self._b: LiveBlock | None = None
        self._reads_since_b = 0

    async def read(self, *, fresh_b: bool = False) -> Read:
        """A + B merged. With ``b_every=N`` the B block is read on every N-th read (and after any
        write, or with ``fresh_b``); in between the last B block is reused (its fields may be stale)."""

        async def run(tx: Transaction) -> Read:
            a = await self._sign_on(tx)
            at = datetime.now(UTC)
            b = self._b
            if b is None or fresh_b or self._reads_since_b >= self.b_every - 1 + (b is None):
                b = await tx.read_b(a.kwh_scale)
                self._b, self._reads_since_b = b, 0
            else:
                self._reads_since_b += 1
            return Read.of(a, b, time=at)

        return await self.bus.transact(self.address, run, idempotent=True)

    async def read_a(self) -> LiveBlock:
        """The A block alone."""

        async def run(tx: Transaction) -> LiveBlock:
            return await self._sign_on(tx)

        return await self.bus.transact(self.address, run, idempotent=True)

    def _written(self) -> None:
        self._b = None

    # V4-only setters (W1–W5, W8).

    async def set_relay(
        self, relay: Relay | int | str, state: RelayState | int | str, seconds: int = 0, *, password: str | None = None
    ) -> None:
        """W1: open or close relay 1 or 2, for ``seconds`` (0 = hold)."""
        await self.apply("relay", relay=relay, state=state, seconds=seconds, password=password)

    async def set_pulse_input_ratio(
        self, line: PulseInput | int | str, ratio: int, *, password: str | None = None
    ) -> None:
        """W2: pulse input ratio (1–9999) of line 1–3."""
        await self.apply("pulse-input-ratio", line=line, ratio=ratio, password=password)

    async def set_pulse_output_ratio(self, ratio: PulseOutputRatio | int | str, *, password: str | None = None) -> None:
        """W3: pulse output ratio."""
        await self.apply("pulse-output-ratio", ratio=ratio, password=password)

    async def zero_resettable(self, *, password: str | None = None) -> None:
        """W4: zero the resettable kWh registers (forward and reverse)."""
        await self.apply("zero-resettable", password=password)

    async def set_max_demand_reset_interval(
        self, interval: MaxDemandResetInterval | int | str, *, password: str | None = None
    ) -> None:
        """W5: automatic max-demand reset: "off", "monthly", "weekly", "daily" or "hourly" (as
        ``Max_Demand_Interval_Reset`` reads back)."""
        await self.apply("max-demand-reset-interval", interval=interval, password=password)

    async def set_lcd(self, items: Sequence[LcdItem | int | str], *, password: str | None = None) -> None:
        """W8: what the LCD shows, 1–40 items."""
        await self.apply("lcd", items=items, password=password)
