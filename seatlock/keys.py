"""Every Redis key and channel name seatlock uses, in one place.

Keys of one screening share the hash tag ``{scr:ID}`` so every script touching them runs on one
Redis Cluster slot. Lua scripts never build key names: they receive them in KEYS. Keys read
together by one command share a hash tag too (``{ws}``: the WebSocket statistics).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

PREFIX = "sl:"


def session(session_id: str) -> str:
    """Cached state of an auth session: "1" active, "0" revoked."""
    return f"{PREFIX}sess:{session_id}"


def login_failures_account(email: str) -> str:
    return f"{PREFIX}login-fail:acct:{email.lower()}"


def login_failures_address(address: str) -> str:
    return f"{PREFIX}login-fail:ip:{address}"


def login_failures_pair(email: str, address: str) -> str:
    """Failed logins of one account from one client address."""
    return f"{PREFIX}login-fail:pair:{address}:{email.lower()}"


def login_known(email: str, address: str) -> str:
    """Set while an address signed in to the account lately: the account-wide failure limit,
    which strangers can run down, does not lock the owner out from there."""
    return f"{PREFIX}login-known:{address}:{email.lower()}"


def refresh_grace(token_digest: str) -> str:
    """The sealed token pair a just-spent refresh token was rotated to (its grace window)."""
    return f"{PREFIX}refresh-grace:{token_digest}"


def rate_limit(name: str) -> str:
    return f"{PREFIX}rate:{name}"


# --- WebSocket statistics (/ws/stats). Every process keeps its own entry, with a TTL it refreshes;
# a reader lists the set and fetches every entry with one MGET. The hash tag {ws} puts the set and
# the entries on one Redis Cluster slot, so that MGET is legal there (a few small keys, one write
# per process a second: no hot slot).
WS_STATS_PROCESSES = f"{PREFIX}{{ws}}:procs"  # set of the ids of processes that have an entry


def ws_stats_entry(process_id: str) -> str:
    """JSON ``{"screening id": watchers}`` of one process (``Hub.publish_stats``), with a TTL."""
    return f"{PREFIX}{{ws}}:proc:{process_id}"


# --- Screenings: the seat-hold engine. Every key of screening N carries the hash tag {scr:N}. ---

# Sorted set screening id -> starts_at (ms) of the screenings loaded into Redis, for the sweep.
LOADED_SCREENINGS = f"{PREFIX}screenings"
HOLD_MARK = ":hold:"


def screening_tag(screening_id: int) -> str:
    return f"{PREFIX}{{scr:{screening_id}}}"


def screening_meta(screening_id: int) -> str:
    """Hash: starts_at (ms) and the "ready" marker written by the load script."""
    return f"{screening_tag(screening_id)}:meta"


def screening_seats(screening_id: int) -> str:
    """Set of the seat ids of the screening's room."""
    return f"{screening_tag(screening_id)}:seats"


def screening_sold(screening_id: int) -> str:
    """Hash seat id -> user id of the seats sold (active tickets)."""
    return f"{screening_tag(screening_id)}:sold"


def screening_holds(screening_id: int) -> str:
    """Hash seat id -> "user:expires_ms:first_ms:pinned_ms", the index of holds."""
    return f"{screening_tag(screening_id)}:holds"


def screening_deadlines(screening_id: int) -> str:
    """Sorted set seat id -> the hold's effective deadline (ms), for the sweep."""
    return f"{screening_tag(screening_id)}:deadlines"


def screening_owners(screening_id: int) -> str:
    """Sorted set seat id -> user id of the holds, to count one user's holds quickly."""
    return f"{screening_tag(screening_id)}:owners"


def screening_version(screening_id: int) -> str:
    return f"{screening_tag(screening_id)}:ver"


def screening_events(screening_id: int) -> str:
    """Pub/sub channel of the screening's seat changes (JSON, one message per change)."""
    return f"{screening_tag(screening_id)}:events"


def screening_log(screening_id: int) -> str:
    """Stream of the screening's latest events (fields v: version, e: the event's JSON), capped
    at SEATLOCK_EVENT_LOG_LENGTH; emptied on a reset (load, refresh): what a WebSocket client
    reconnecting with ``?since=`` is replayed from (lua/resume.lua). It exists only while a
    process marks the screening watched (lua/watch.lua: its TTL), and events are appended only
    to an existing one."""
    return f"{screening_tag(screening_id)}:log"


@functools.lru_cache(maxsize=4096)
def screening_rows(screening_id: int) -> str:
    """Hash: the room's row geometry, written by the load and refresh scripts. "n": the number of
    rows; "r<i>": row i's seats as JSON [[id...], [number...], [type...]] in seat-number order
    (rows 1..n in seat-map order, the front row first); "l<i>": row i's label; "<seat id>": the
    seat's row i; "v": a checksum of it all. Scripts that read it get it as their last key,
    after any leases (seatlock/engine/rows.py)."""
    return f"{screening_tag(screening_id)}:rows"


def screening_deleted(screening_id: int) -> str:
    """The screening's tombstone: written by the forget script (the screening was deleted in
    PostgreSQL), with a long TTL; the load and refresh scripts refuse to write a screening that
    has one. They get it just before the rows hash."""
    return f"{screening_tag(screening_id)}:deleted"


def seat_hold(screening_id: int, seat_id: int) -> str:
    """The lease of one held seat: value "user_id:grant" (the grant that took it), with a TTL."""
    return f"{screening_tag(screening_id)}{HOLD_MARK}{seat_id}"


def parse_seat_hold(key: bytes | str) -> tuple[int, int] | None:
    """(screening id, seat id) of a lease key, or None for any other key."""
    text = key.decode() if isinstance(key, bytes) else key
    head = f"{PREFIX}{{scr:"
    if not text.startswith(head):
        return None
    screening, sep, rest = text[len(head) :].partition("}" + HOLD_MARK)
    if not sep or not screening.isdigit() or not rest.isdigit():
        return None
    return int(screening), int(rest)


def script_keys(screening_id: int, seats: Sequence[int] = ()) -> list[str]:
    """The KEYS of every screening script (order: ``lua/lib.lua``), then one lease per seat."""
    tag = screening_tag(screening_id)
    return [*_common_keys(screening_id), *[f"{tag}{HOLD_MARK}{seat}" for seat in seats]]


@functools.lru_cache(maxsize=4096)
def _common_keys(screening_id: int) -> tuple[str, ...]:
    return (
        screening_meta(screening_id),
        screening_seats(screening_id),
        screening_sold(screening_id),
        screening_holds(screening_id),
        screening_deadlines(screening_id),
        screening_version(screening_id),
        screening_events(screening_id),
        screening_owners(screening_id),
        screening_log(screening_id),
    )
