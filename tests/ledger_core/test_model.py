"""The ledger against a model of it: hypothesis drives random sequences of
grants (plain and expiring), spends, holds, captures, voids, reversals,
replays, batches, sweeps and the passing of time through the real services,
for two owners (a batch may mix them). After every step, for each owner, the
balance and ``held`` that reads show must be the model's, a refusal must
state the model's figures, ``verify_ledger`` must find the rows consistent,
and a consumer of the owner's event feed must have seen every entry and hold
change once, in order.

The model is the contract, written plainly: credits that expire are lots,
consumed soonest expiry first (the oldest entry on ties), then the pool of
credits that do not expire; a hold reserves the same way; from ``expires_at``
on, a lot's rest and a hold's reservation stop counting whether or not a
sweep or a write has settled them; a reversal of a grant takes from the
grant's own lot first; a reversal of a debit gives back what it consumed.

Time is real: short lots live 0.8 s and short holds 1 s. Before each step
and each check the machine steps clear of any expiry that is less than
``GUARD`` away, so every step lands unambiguously before or after it."""

from __future__ import annotations

import copy
import dataclasses
import functools
import io
import itertools
import time
from datetime import datetime, timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone
from hypothesis import HealthCheck, Phase, assume, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from ledger_core.actors import Actor
from ledger_core.events import ENTRY_POSTED, Cursor, event_page
from ledger_core.exceptions import (
    AlreadyReversed,
    BatchRefused,
    HoldExpired,
    HoldNotPending,
    InsufficientBalance,
    NonceConflict,
    NotReversible,
)
from ledger_core.models import CREDIT_EXPIRY, REVERSAL, HoldEvent, LedgerEntry
from ledger_core.selectors import EXPIRING_SHOWN, balance_get, entry_get, entry_list
from ledger_core.services import (
    EntryRequest,
    due_holds_sweep,
    due_lots_sweep,
    entry_post,
    entry_post_batch,
    entry_reverse,
    hold_capture,
    hold_place,
    hold_void,
)

APP = "content"
SYSTEM = Actor.system("system:model")
SHORT_LOT = timedelta(seconds=0.8)
LONG_LOT = timedelta(days=1)
SHORT_HOLD = 1  # seconds (the shortest a hold may live)
GUARD = timedelta(seconds=0.4)  # no step may straddle an expiry (a step takes ms)
AFTER = timedelta(seconds=0.05)
_examples = itertools.count()
STATUS_AFTER = {"hold.placed": "pending", "hold.captured": "captured",
                "hold.voided": "voided", "hold.expired": "expired"}  # fmt: skip
OWNERS = 2
WHO = st.integers(0, OWNERS - 1)  # which owner a step is for
POSITION = st.integers(0, 2**16)  # which hold or entry a step is for (see pick)
NEW = 10**15  # ids for a batch's lots until it has stored them (after every stored id)


@dataclasses.dataclass
class Lot:
    owner: int
    expires_at: datetime
    remaining: int  # neither consumed, nor reserved by a pending hold, nor expired


@dataclasses.dataclass
class Hold:
    owner: int
    amount: int  # credits reserved (positive)
    reserved: list[tuple[int, int]]  # (lot, part) taken from lots; the rest is pool
    expires_at: datetime
    status: str = "pending"
    captured: int | None = None


@dataclasses.dataclass
class Entry:
    owner: int
    amount: int
    operation: str
    consumed: list[tuple[int, int]]
    lot: bool  # a grant that is a lot
    reversed: bool = False
    request: dict | None = None  # how it was posted (for replays)


def pick(ids: list[int], position: int) -> int | None:
    """One of ``ids`` (in the order they were made) by ``position`` (modulo
    their number; the database's ids differ from run to run, positions do
    not), or None if there is none yet. Rules draw the same values whatever
    the model's state (which time can change: a grant may have expired), and
    have no preconditions, so hypothesis replays a case with the same draws
    and reports its failure rather than an inconsistent generation."""
    return ids[position % len(ids)] if ids else None


def unless_slow(step):
    """A step that fails after taking ``GUARD`` or longer since the machine
    stepped clear of expiries may have crossed one (a busy machine): its
    outcome is ambiguous, so hypothesis drops the case instead of failing it."""

    @functools.wraps(step)
    def checked(self, *args, **kwargs):
        try:
            return step(self, *args, **kwargs)
        except (Exception, pytest.fail.Exception):
            assume(time.monotonic() - self.cleared_at < GUARD.total_seconds())
            raise

    return checked


class LedgerModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        example = next(_examples)
        self.owners = [f"model-{example}-{who}" for who in range(OWNERS)]
        # Per owner: credits that do not expire (those reserved by holds included).
        self.pools = [0] * OWNERS
        self.lots: dict[int, Lot] = {}
        self.holds: dict[int, Hold] = {}
        self.entries: dict[int, Entry] = {}
        self.nonces = itertools.count()
        self.cleared_at = time.monotonic()
        # Per owner: how far a consumer of the owner's feed has read, and what it read.
        self.cursors = [Cursor()] * OWNERS
        self.feeds: list[list] = [[] for _ in range(OWNERS)]

    # --- time -------------------------------------------------------------

    def expiries(self) -> list[datetime]:
        pending = [h.expires_at for h in self.holds.values() if h.status == "pending"]
        return [lot.expires_at for lot in self.lots.values()] + pending

    def clear_of_expiries(self) -> datetime:
        """Now, once no expiry is within ``GUARD`` ahead or ``AFTER`` behind;
        the model settled as of then (what reads must show)."""
        while True:
            now = timezone.now()
            close = [e for e in self.expiries() if e - GUARD <= now < e + AFTER]
            if not close:
                break
            time.sleep((max(close) + AFTER - now).total_seconds())
        self.cleared_at = time.monotonic()
        for hold in self.holds.values():
            if hold.status == "pending" and hold.expires_at <= now:
                hold.status = "expired"
                for lot, part in hold.reserved:
                    self.lots[lot].remaining += part
        for lot in self.lots.values():
            if lot.expires_at <= now:
                lot.remaining = 0
        return now

    # --- the model's arithmetic -------------------------------------------

    def balance(self, who: int) -> int:
        pending = [h for h in self.holds.values() if h.owner == who and h.status == "pending"]
        reserved = sum(part for h in pending for _, part in h.reserved)
        lots = sum(lot.remaining for lot in self.lots.values() if lot.owner == who)
        return self.pools[who] + lots + reserved

    def held(self, who: int) -> int:
        return sum(
            h.amount for h in self.holds.values() if h.owner == who and h.status == "pending"
        )

    def plan(self, who: int, need: int, first: int | None = None) -> list[tuple[int, int]]:
        """What ``need`` credits of owner ``who`` take from lots, in consumption order."""
        order = sorted(
            (
                lot_id
                for lot_id, lot in self.lots.items()
                if lot.owner == who and lot.remaining > 0 and lot_id != first
            ),
            key=lambda lot_id: (self.lots[lot_id].expires_at, lot_id),
        )
        if first is not None and first in self.lots and self.lots[first].remaining > 0:
            order.insert(0, first)
        parts = []
        for lot_id in order:
            if need == 0:
                break
            take = min(need, self.lots[lot_id].remaining)
            parts.append((lot_id, take))
            need -= take
        return parts

    def take(self, who: int, amount: int, parts: list[tuple[int, int]]) -> None:
        """A debit of ``amount`` that takes ``parts`` from lots, the rest from the pool."""
        for lot, part in parts:
            self.lots[lot].remaining -= part
        self.pools[who] -= amount - sum(part for _, part in parts)

    def shortfall(self, who: int, amount: int) -> dict[str, int] | None:
        """The refusal's figures if a debit of ``amount`` is not covered, else None."""
        balance, available = self.balance(who), self.balance(who) - self.held(who)
        if available >= amount:
            return None
        return {"balance": balance, "available": available, "required": amount}

    def nonce(self) -> str:
        return f"n{next(self.nonces)}"

    def record(self, who: int, entry, *, lot: bool = False, request: dict | None = None) -> None:
        assert entry.owner_id == self.owners[who]
        consumed = [(p["entry"], p["amount"]) for p in entry.consumed or ()]
        self.entries[entry.pk] = Entry(
            who, entry.amount, entry.operation, consumed, lot, False, request
        )

    # --- rules --------------------------------------------------------------

    @rule(who=WHO, amount=st.integers(1, 40), lifetime=st.sampled_from([None, SHORT_LOT, LONG_LOT]))
    @unless_slow
    def grant(self, who, amount, lifetime):
        now = self.clear_of_expiries()
        expires_at = now + lifetime if lifetime is not None else None
        request = {"operation": "CREDIT_ADD", "amount": amount, "expires_at": expires_at,
                   "nonce": self.nonce()}  # fmt: skip
        result = entry_post(owner_id=self.owners[who], app=APP, actor=SYSTEM, **request)
        assert not result.replayed
        self.record(who, result.entry, lot=expires_at is not None, request=request)
        if expires_at is None:
            self.pools[who] += amount
        else:
            self.lots[result.entry.pk] = Lot(who, expires_at, amount)

    @rule(who=WHO, amount=st.integers(1, 40), dry=st.booleans())
    @unless_slow
    def spend(self, who, amount, dry):
        """A spend; with ``dry``, a dry run of it first, which must answer
        what the spend then does and store nothing (not even its nonce)."""
        self.clear_of_expiries()
        request = {"operation": "CREDIT_SPEND", "amount": -amount, "nonce": self.nonce()}
        post = functools.partial(
            entry_post, owner_id=self.owners[who], app=APP, actor=SYSTEM, **request
        )
        expected = self.plan(who, amount)
        if shortfall := self.shortfall(who, amount):
            for dry_run in (True, False) if dry else (False,):
                with pytest.raises(InsufficientBalance) as raised:
                    post(dry_run=dry_run)
                assert raised.value.extra == shortfall
            return
        if dry:
            tried = post(dry_run=True).entry
            assert tried.pk is None
            assert [(p["entry"], p["amount"]) for p in tried.consumed or ()] == expected
        entry = post().entry
        self.record(who, entry, request=request)
        assert self.entries[entry.pk].consumed == expected
        self.take(who, amount, expected)

    @rule(who=WHO, amount=st.integers(1, 30), short=st.booleans(), dry=st.booleans())
    @unless_slow
    def hold(self, who, amount, short, dry):
        """A hold; with ``dry``, a dry run of it first (as for spends)."""
        self.clear_of_expiries()
        expected = self.plan(who, amount)
        arguments = {"operation": "CREDIT_SPEND", "amount": -amount, "nonce": self.nonce(),
                     "expires_in": SHORT_HOLD if short else 900}  # fmt: skip
        place = functools.partial(
            hold_place, owner_id=self.owners[who], app=APP, actor=SYSTEM, **arguments
        )
        if shortfall := self.shortfall(who, amount):
            for dry_run in (True, False) if dry else (False,):
                with pytest.raises(InsufficientBalance) as raised:
                    place(dry_run=dry_run)
                assert raised.value.extra == shortfall
            return
        if dry:
            tried = place(dry_run=True).hold
            assert tried.pk is None
            assert [(p["entry"], p["amount"]) for p in tried.reserved or ()] == expected
        placed = place().hold
        reserved = [(p["entry"], p["amount"]) for p in placed.reserved or ()]
        assert reserved == expected
        for lot, part in reserved:
            self.lots[lot].remaining -= part
        self.holds[placed.pk] = Hold(who, amount, reserved, placed.expires_at)

    @rule(
        items=st.lists(
            st.tuples(WHO, st.integers(-30, 30).filter(bool), st.sampled_from([None, LONG_LOT])),
            min_size=1,
            max_size=5,
        ),
        atomic=st.booleans(),
    )
    @unless_slow
    def batch(self, items, atomic):
        """A batch of grants (amount > 0) and spends, for either owner: atomic,
        all or nothing; else each item on its own, in order."""
        now = self.clear_of_expiries()
        requests = [
            EntryRequest(
                owner_id=self.owners[who], nonce=self.nonce(), amount=amount,
                operation="CREDIT_ADD" if amount > 0 else "CREDIT_SPEND",
                expires_at=now + lifetime if amount > 0 and lifetime is not None else None,
            )
            for who, amount, lifetime in items
        ]  # fmt: skip
        state = copy.deepcopy((self.pools, self.lots))
        plans, refused, shortfalls = [], None, {}
        for index, ((who, amount, _), request) in enumerate(zip(items, requests, strict=True)):
            if amount < 0 and (shortfall := self.shortfall(who, -amount)):
                plans.append(None)
                shortfalls[index] = shortfall
                refused = index if refused is None else refused
                continue
            plans.append(self.plan(who, -amount) if amount < 0 else [])
            if amount < 0:
                self.take(who, -amount, plans[-1])
            elif request.expires_at is None:
                self.pools[who] += amount
            else:  # the lot's id is known once stored
                self.lots[NEW + index] = Lot(who, request.expires_at, amount)
        if atomic and refused is not None:
            self.pools, self.lots = state
            with pytest.raises(BatchRefused) as raised:
                entry_post_batch(app=APP, actor=SYSTEM, entries=requests, atomic=True)
            assert raised.value.index == refused
            assert isinstance(raised.value.error, InsufficientBalance)
            assert raised.value.error.extra == shortfalls[refused]
            return
        results = entry_post_batch(app=APP, actor=SYSTEM, entries=requests, atomic=atomic)
        for index, (item, request, result, plan) in enumerate(
            zip(items, requests, results, plans, strict=True)
        ):
            if plan is None:
                assert isinstance(result.error, InsufficientBalance), result
                assert result.error.extra == shortfalls[index]
                continue
            assert result.error is None and not result.replayed, result
            self.record(item[0], result.entry, lot=request.expires_at is not None)
            if NEW + index in self.lots:  # give the lot its id
                self.lots[result.entry.pk] = self.lots.pop(NEW + index)
                plan_ids = {NEW + index: result.entry.pk}
                for later in plans[index + 1 :]:
                    for position, (lot, part) in enumerate(later or []):
                        later[position] = (plan_ids.get(lot, lot), part)
            assert self.entries[result.entry.pk].consumed == plan, (index, plan)

    @rule(position=POSITION, part=POSITION)
    @unless_slow
    def capture(self, position, part):
        hold_id = pick(list(self.holds), position)
        if hold_id is None:
            return
        hold = self.holds[hold_id]
        part = 1 + part % hold.amount
        self.clear_of_expiries()
        call = lambda: hold_capture(hold_id=hold_id, app=APP, actor=SYSTEM, amount=-part)  # noqa: E731
        if hold.status == "expired":
            with pytest.raises(HoldExpired):
                call()
        elif hold.status == "voided" or (hold.status == "captured" and hold.captured != part):
            with pytest.raises(HoldNotPending):
                call()
        elif hold.status == "captured":
            assert call().replayed
        else:
            entry = call().entry
            consumed, left = [], part
            for lot, reserved in hold.reserved:
                if take := min(reserved, left):
                    consumed.append((lot, take))
                left -= take
                self.lots[lot].remaining += reserved - take
            self.record(hold.owner, entry)
            assert self.entries[entry.pk].consumed == consumed
            self.pools[hold.owner] -= left
            hold.status, hold.captured = "captured", part

    @rule(position=POSITION)
    @unless_slow
    def void(self, position):
        hold_id = pick(list(self.holds), position)
        if hold_id is None:
            return
        hold = self.holds[hold_id]
        self.clear_of_expiries()
        call = lambda: hold_void(hold_id=hold_id, app=APP, actor=SYSTEM)  # noqa: E731
        if hold.status == "captured":
            with pytest.raises(HoldNotPending):
                call()
        elif hold.status in ("voided", "expired"):
            assert call().replayed
        else:
            assert not call().replayed
            for lot, part in hold.reserved:
                self.lots[lot].remaining += part
            hold.status = "voided"

    @rule(position=POSITION)
    @unless_slow
    def reverse(self, position):
        entry_id = pick(list(self.entries), position)
        if entry_id is None:
            return
        entry = self.entries[entry_id]
        who = entry.owner
        self.clear_of_expiries()
        call = lambda: entry_reverse(  # noqa: E731
            entry_id=entry_id, app=APP, actor=SYSTEM, nonce=self.nonce(), reason="model"
        )
        if entry.operation == REVERSAL:
            with pytest.raises(NotReversible):
                call()
            return
        if entry.reversed:
            with pytest.raises(AlreadyReversed):
                call()
            return
        if entry.amount > 0:
            expected = self.plan(who, entry.amount, first=entry_id if entry.lot else None)
            if shortfall := self.shortfall(who, entry.amount):
                with pytest.raises(InsufficientBalance) as raised:
                    call()
                assert raised.value.extra == shortfall
                return
            reversal = call().entry
            self.record(who, reversal)
            assert self.entries[reversal.pk].consumed == expected
            self.take(who, entry.amount, expected)
        else:
            reversal = call().entry
            self.record(who, reversal)
            assert self.entries[reversal.pk].consumed == []
            for lot, part in entry.consumed:
                self.lots[lot].remaining += part
            self.pools[who] += -entry.amount - sum(part for _, part in entry.consumed)
        assert reversal.amount == -entry.amount
        entry.reversed = True

    @rule(position=POSITION, conflict=st.booleans())
    @unless_slow
    def repeat(self, position, conflict):
        """A post sent again: the same payload is a replay, another a conflict."""
        entry_id = pick([k for k, e in self.entries.items() if e.request], position)
        if entry_id is None:
            return
        owner_id = self.owners[self.entries[entry_id].owner]
        request = dict(self.entries[entry_id].request)
        self.clear_of_expiries()  # a grant's lifetime may be over: still a replay
        if conflict:
            request["amount"] += 1 if request["amount"] > 0 else -1
            with pytest.raises(NonceConflict):
                entry_post(owner_id=owner_id, app=APP, actor=SYSTEM, **request)
            return
        result = entry_post(owner_id=owner_id, app=APP, actor=SYSTEM, **request)
        assert result.replayed and result.entry.pk == entry_id

    @rule()
    def sweep(self):
        """The sweepers settle rows; what reads show does not change."""
        self.clear_of_expiries()
        while due_lots_sweep() or due_holds_sweep():
            pass

    @rule()
    def wait(self):
        """Let the next short expiry pass (at most a little over a second)."""
        now = timezone.now()
        ahead = [e for e in self.expiries() if now < e <= now + timedelta(seconds=SHORT_HOLD)]
        if ahead:
            time.sleep((min(ahead) + AFTER - now).total_seconds())

    # --- what must hold after every step -----------------------------------

    @invariant()
    @unless_slow
    def reads_show_the_model(self):
        self.clear_of_expiries()
        for who, owner_id in enumerate(self.owners):
            view = balance_get(owner_id=owner_id)
            assert (view.balance, view.held) == (self.balance(who), self.held(who)), (
                who, view, self.pools, self.lots, self.holds,
            )  # fmt: skip
            assert view.balance - view.held >= 0
            soonest = sorted(
                (lot.expires_at, lot_id, lot.remaining)
                for lot_id, lot in self.lots.items()
                if lot.owner == who and lot.remaining > 0
            )[:EXPIRING_SHOWN]
            expiring = [(item.expires_at, item.amount) for item in view.expiring]
            assert expiring == [(at, remaining) for at, _, remaining in soonest], who

    @invariant()
    def entries_read_back(self):
        """Every entry reads back by its id and by the nonce it was posted
        with, showing ``reversed_by`` exactly when the model reversed it."""
        for entry_id, entry in self.entries.items():
            stored = entry_get(entry_id=entry_id)
            assert stored is not None and stored.amount == entry.amount, entry_id
            assert (stored.reversed_by is not None) == entry.reversed, (entry_id, entry)
            if entry.request:
                owner_id = self.owners[entry.owner]
                found = entry_list(owner_id=owner_id, nonce=entry.request["nonce"])
                assert [e.pk for e in found] == [entry_id]

    @invariant()
    @unless_slow
    def rows_are_consistent(self):
        for who, owner_id in enumerate(self.owners):
            if not any(entry.owner == who for entry in self.entries.values()):
                continue
            out = io.StringIO()
            try:
                call_command("verify_ledger", "--owner", owner_id, "--no-progress", stdout=out)
            except SystemExit:
                pytest.fail(out.getvalue())

    @invariant()
    @unless_slow
    def the_feed_shows_every_change_once(self):
        """A consumer reading an owner's feed on from its last cursor, in
        pages of 3, has seen every entry and every hold change once, in order."""
        for who, owner_id in enumerate(self.owners):
            self.check_feed(who, owner_id)

    def check_feed(self, who: int, owner_id: str) -> None:
        stored = (
            LedgerEntry.objects.filter(owner_id=owner_id).count()
            + HoldEvent.objects.filter(owner_id=owner_id).count()
        )
        feed = self.feeds[who]
        deadline = time.monotonic() + 10  # another transaction may hold the watermark back
        while len(feed) < stored and time.monotonic() < deadline:
            events, self.cursors[who] = event_page(
                after=self.cursors[who], limit=3, owner_id=owner_id
            )
            feed += events
        positions = [event.position for event in feed]
        assert positions == sorted(set(positions)), positions
        assert len(feed) == stored
        assert {event.owner_id for event in feed} <= {owner_id}
        entries = {e.data.pk: e.data for e in feed if e.type == ENTRY_POSTED}
        mine = {pk for pk, entry in self.entries.items() if entry.owner == who}
        assert mine <= set(entries)
        # The rest are expiries, of lots past their expiry (a lot expires
        # again when a reversal or a hold gives credits back to it after).
        expiries = [entries[pk] for pk in entries.keys() - mine]
        assert all(entry.operation == CREDIT_EXPIRY for entry in expiries)
        for expiry in expiries:
            lot = self.lots[expiry.metadata["lot"]]
            assert lot.owner == who and lot.expires_at <= expiry.created_at
        holds = {hold_id: hold for hold_id, hold in self.holds.items() if hold.owner == who}
        changes = {hold_id: [] for hold_id in holds}
        for event in feed:
            if event.type != ENTRY_POSTED:
                changes[event.data["id"]].append(event.type)
                assert event.data["status"] == STATUS_AFTER[event.type], event
        for hold_id, hold in holds.items():
            settled = {"captured": ["hold.captured"], "voided": ["hold.voided"], "pending": []}
            assert changes[hold_id] in (
                [["hold.placed", *settled[hold.status]]]
                if hold.status in settled
                else [["hold.placed"], ["hold.placed", "hold.expired"]]
            ), (hold_id, hold, changes[hold_id])


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_the_ledger_behaves_as_its_model():
    LedgerModel.TestCase.settings = settings(
        max_examples=60,
        stateful_step_count=30,
        deadline=None,
        phases=[Phase.explicit, Phase.reuse, Phase.generate],
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    LedgerModel.TestCase().runTest()
