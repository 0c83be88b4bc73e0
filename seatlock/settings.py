"""One settings object, read once from the environment (prefix ``SEATLOCK_``)."""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

PREFIX = "SEATLOCK_"
REDIS_TRANSPORTS = ("fast", "redis-py")
LOG_FORMATS = ("text", "json")  # seatlock/server/logs.py  # seatlock/engine/transport.py
PAYMENT_VERIFIERS = ("accept", "hmac")  # seatlock/services/payments.py
MIN_PAYMENT_SECRET_CHARS = 32
REQUEST_READ_TIMEOUT_S = 20.0  # request_read_timeout_seconds's default (seatlock/server/serving.py)
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
MIN_JWT_SECRET_CHARS = 32  # seatlock/accounts/tokens.py checks a generated or given secret too
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
INF = float("inf")
# The settings whose numbers can only mean something within (lowest, highest): _check_ranges.
RANGES: dict[str, tuple[float, float]] = {
    "port": (1, 65535),  # not 0: each worker would listen on a random port of its own
    "workers": (0, 1024),
    "access_token_minutes": (1, INF),
    "refresh_token_days": (1, INF),
    "reset_token_minutes": (1, INF),
    "bcrypt_rounds": (4, 31),
    "login_max_failures": (1, INF),
    "login_max_failures_per_ip": (1, INF),
    "login_max_failures_per_account": (1, INF),
    "login_window_seconds": (1, INF),
    "refresh_grace_seconds": (0, INF),
    "hold_seconds": (1, INF),
    "max_hold_seconds": (1, INF),
    "max_extend_minutes": (1, INF),
    "max_seats_per_user": (1, INF),
    "sweep_interval_seconds": (0.001, INF),
    "cleanup_min_interval_seconds": (0, INF),
    "reconcile_interval_seconds": (0, INF),
    "reconcile_settle_seconds": (0, INF),
    "db_pool_min": (0, INF),
    "db_pool_max": (1, INF),
    "redis_pool_max": (1, INF),
    "catalog_cache_seconds": (0, INF),
    "sales_cache_seconds": (0, INF),
    "smtp_port": (1, 65535),
    "max_upload_bytes": (1, INF),
    "embedded_redis_port": (0, 65535),
    "embedded_postgres_port": (0, 65535),
    "loop_silence_seconds": (0.001, INF),
}


def _default_data_dir() -> Path:
    return Path.cwd() / "var"


@dataclass(frozen=True, slots=True)
class Settings:
    # Where things are. Empty URLs mean "start embedded servers" (serve) or throw-away ones (tests).
    redis_url: str = ""
    database_url: str = ""
    data_dir: Path = field(default_factory=_default_data_dir)
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 0  # 0: one per core
    log_level: str = "info"
    # Log lines (seatlock/server/logs.py): "text", or "json" (one object per line); one access
    # line per request and WebSocket (logger seatlock.access) unless access_log is off.
    log_format: str = "text"
    access_log: bool = True
    # Browser origins allowed to call the API (comma-separated; "*": any). Auth is a bearer
    # header, never a cookie, so any origin is safe by default.
    cors_origins: str = "*"
    # How the engine talks to Redis: "fast" (our auto-pipelining connection) or "redis-py"
    # (redis-py's public API: registered scripts, pipelines, PubSub).
    redis_transport: str = "fast"

    # Auth.
    jwt_secret: str = ""  # empty: generated once and kept in data_dir
    access_token_minutes: int = 15
    refresh_token_days: int = 14
    reset_token_minutes: int = 30
    bcrypt_rounds: int = 12
    # The password hashing lane (seatlock/accounts/passwords.py Hasher): threads per process, and
    # the longest a hash may wait for one before its request is answered 503 with Retry-After.
    password_hash_threads: int = 1
    password_wait_seconds: float = 5.0
    # Failed logins per window (seatlock/accounts/throttle.py): per account and client address,
    # per client address, and per account from anywhere (only a backstop for very high counts:
    # it is the one limit that strangers can run down for the owner).
    login_max_failures: int = 5
    login_max_failures_per_ip: int = 30
    login_max_failures_per_account: int = 100
    login_window_seconds: int = 900
    # Peers (IPs or CIDRs, comma-separated) whose X-Forwarded-For names the client; none by default.
    trusted_proxies: str = ""
    # How long a just-spent refresh token, presented again, gets the pair it was spent for.
    refresh_grace_seconds: int = 10
    admin_email: str = ""
    admin_password: str = ""

    # Seat holds.
    hold_seconds: int = 300
    max_hold_seconds: int = 1800  # hard cap on a hold's total life, extensions included
    max_extend_minutes: int = 15
    max_seats_per_user: int = 10  # seats one user may hold in one screening
    sweep_interval_seconds: float = 1.0
    cleanup_min_interval_seconds: float = 1.0
    # Period of the pass that repairs Redis's sold seats from PostgreSQL's active tickets
    # (seatlock/services/reconciler.py); 0 turns the periodic pass off.
    reconcile_interval_seconds: float = 30.0
    # A ticket booked, cancelled or refunded this recently is left to its booking's or
    # cancellation's own marking of Redis: a pass racing it could undo a newer change of the seat.
    reconcile_settle_seconds: float = 10.0
    # Refuse holds of seats known taken from a per-process mirror of contended screenings
    # (seatlock/engine/mirrors.py) instead of asking Redis; off: every hold attempt runs the script.
    seat_mirrors: bool = True
    # Holds that survive a Redis failover: a hold, an extension or a sale is answered only once
    # Redis WAIT confirmed that many replicas have it (0: don't wait); WAIT gives up after
    # hold_replicas_timeout_ms, and the request is answered 503 (a hold is let go again).
    hold_replicas: int = 0
    hold_replicas_timeout_ms: int = 200
    # WebSocket clients that reconnect with ?since=VERSION are replayed the events they missed
    # from a log of the latest event_log_length per screening (a capped Redis stream the scripts
    # write); one further behind gets a seat_snapshot instead. 0: no log, always a snapshot.
    event_log_length: int = 500

    # The single-gap rule: refuse a hold (manual or best available) that would leave one free
    # seat stranded between unavailable seats or at a row's end (lua/lib.lua stranded()). A
    # screening's own no_single_gaps (admin field) wins; this is the rule of those without one.
    no_single_gaps: bool = False

    # Payments. "accept": any payment_id (development); "hmac": only payment_ids signed with
    # payment_secret by the payment provider (seatlock/services/payments.py).
    payment_verifier: str = "accept"
    payment_secret: str = field(default="", repr=False)  # never in a log line
    # How long a pending (unpaid) ticket keeps its seat; 0: hold_seconds.
    payment_seconds: int = 0

    # Hold times are on Redis's clock (seatlock/engine/clock.py): each process measures its offset
    # to Redis TIME every clock_sync_seconds. clock_offset_ms shifts this process's own clock, a
    # test and diagnostic knob (a host whose clock is wrong); it changes no outcome once synced.
    clock_sync_seconds: float = 5.0
    clock_offset_ms: int = 0

    # Pools.
    db_pool_min: int = 2
    db_pool_max: int = 10
    # The longest a request waits on PostgreSQL for a connection of the pool, a new connection or
    # a statement's answer before it is answered 503 (a server that is stopped or cut off answers
    # nothing at all); after such a timeout, 503 at once until PostgreSQL answers a probe.
    db_timeout_seconds: float = 10.0
    # The same for Redis: how long a call waits for a new connection, or for Redis to send
    # anything while replies are owed (the fast transport's watchdog looks four times per
    # period, so up to 1.25 times this), before the connection is dropped and its calls get 503
    # (on the fast transport, at once until Redis answers a probe). A ``socket_timeout`` or
    # ``socket_connect_timeout`` in SEATLOCK_REDIS_URL wins.
    redis_timeout_seconds: float = 5.0
    redis_pool_max: int = 64

    # Lag-tolerant reads (db/pool.py ReplicaReads): catalog browsing, search and admin statistics
    # of anonymous callers (statistics: of admins) go to this streaming replica of database_url;
    # empty: everything reads the primary. Reads fall back to the primary while the replica is
    # unreachable or replays more than database_read_max_lag_seconds behind it.
    database_read_url: str = field(default="", repr=False)  # may hold a password
    database_read_max_lag_seconds: float = 10.0

    # Anonymous catalog answers (cache=CATALOG GETs without Authorization) are kept in each
    # process for this many seconds (api/answercache.py); 0: off. A catalog write clears its own
    # process's copies at once; an admin's change shows on every host within this time.
    catalog_cache_seconds: float = 1.0
    # Tickets sold per movie over the last week, which trending and recommendations rank by, are
    # counted at most once per this many seconds in each process (db/discovery.py SalesTally),
    # for every caller, signed in or not; 0: counted on every call.
    sales_cache_seconds: float = 10.0

    # Mail: SMTP when smtp_host is set, otherwise the local outbox under data_dir.
    smtp_host: str = ""
    smtp_port: int = 587
    smtp_user: str = ""
    smtp_password: str = ""
    smtp_starttls: bool = True
    mail_from: str = "seatlock <no-reply@localhost>"

    # Uploads and the public URL of this server (for links in mail and picture URLs).
    public_url: str = "http://localhost:8000"
    max_upload_bytes: int = 2 * 1024 * 1024

    # Demo data on an empty database when the embedded default is used.
    seed_demo: bool = True

    # Embedded servers (no URL set): fixed loopback ports (0: any free port), and the directory
    # of the PostgreSQL binaries (empty: PATH, then /usr/lib/postgresql, then pgserver's).
    embedded_redis_port: int = 0
    embedded_postgres_port: int = 0
    embedded_postgres_bin: str = ""

    # Metrics and readiness. /metrics is public unless metrics_token is set (then it wants
    # "Authorization: Bearer <token>"); /health/ready fails when a background loop has not
    # beaten for loop_silence_seconds (seatlock/heartbeats.py).
    metrics_token: str = field(default="", repr=False)  # never in a log line
    loop_silence_seconds: float = 15.0

    # WebSockets: permessage-deflate costs ~35 KB of zlib state per connection that negotiates
    # it (browsers offer it), for small seat events; off unless turned on (serving.py).
    ws_per_message_deflate: bool = False

    # Slow clients (seatlock/server/serving.py Stalls): a connection whose client sent nothing
    # this long after connecting, no whole request head this long after the request began, no
    # next piece of a body this long after the last, or read nothing of a response held back for
    # it this long, is closed (a 408 when its request's head or body was not whole, and no
    # answer had begun).
    request_read_timeout_seconds: float = REQUEST_READ_TIMEOUT_S

    def __post_init__(self) -> None:
        redis_cluster_nodes(self.redis_url)  # a bad URL is refused at start-up
        if self.redis_transport not in REDIS_TRANSPORTS:
            raise ValueError(
                f"{PREFIX}REDIS_TRANSPORT: {self.redis_transport!r} is not one of"
                f" {', '.join(REDIS_TRANSPORTS)}"
            )
        self._check_payments()
        if self.log_format not in LOG_FORMATS:
            raise ValueError(
                f"{PREFIX}LOG_FORMAT: {self.log_format!r} is not one of {', '.join(LOG_FORMATS)}"
            )
        proxy_networks(self.trusted_proxies)  # a typo is refused at start-up, not per request
        self._check_replicas()
        self._check_ranges()
        if self.database_read_max_lag_seconds <= 0:
            raise ValueError(f"{PREFIX}DATABASE_READ_MAX_LAG_SECONDS: must be more than 0")
        if self.event_log_length < 0:
            raise ValueError(f"{PREFIX}EVENT_LOG_LENGTH: must be 0 (no log) or more")
        if self.request_read_timeout_seconds <= 0:
            raise ValueError(f"{PREFIX}REQUEST_READ_TIMEOUT_SECONDS: must be more than 0")
        if self.clock_sync_seconds <= 0:
            raise ValueError(f"{PREFIX}CLOCK_SYNC_SECONDS: must be more than 0")
        if self.password_hash_threads < 1:
            raise ValueError(f"{PREFIX}PASSWORD_HASH_THREADS: must be 1 or more")
        if self.password_wait_seconds < 0:
            raise ValueError(f"{PREFIX}PASSWORD_WAIT_SECONDS: must be 0 or more")
        for name in ("db_timeout_seconds", "redis_timeout_seconds"):
            if not getattr(self, name) > 0:  # 0 means "no limit" to asyncpg and redis-py; NaN
                raise ValueError(f"{PREFIX}{name.upper()}: must be more than 0")

    def _check_ranges(self) -> None:
        """Numbers outside what they can mean are refused at start-up in one line: a negative
        hold time started the server and then failed every hold with a 500."""
        for name, (low, high) in RANGES.items():
            value = getattr(self, name)
            if not low <= value <= high:  # NaN fails both comparisons
                limit = f"from {low:g} to {high:g}" if high != INF else f"{low:g} or more"
                raise ValueError(f"{PREFIX}{name.upper()}: {value!r} must be {limit}")
        if self.max_hold_seconds < self.hold_seconds:
            raise ValueError(f"{PREFIX}MAX_HOLD_SECONDS: must be at least {PREFIX}HOLD_SECONDS")
        if self.db_pool_min > self.db_pool_max:
            raise ValueError(f"{PREFIX}DB_POOL_MIN: must be at most {PREFIX}DB_POOL_MAX")
        if self.log_level.lower() not in LOG_LEVELS:
            raise ValueError(
                f"{PREFIX}LOG_LEVEL: {self.log_level!r} is not one of {', '.join(LOG_LEVELS)}"
            )
        if self.jwt_secret and len(self.jwt_secret) < MIN_JWT_SECRET_CHARS:
            raise ValueError(
                f"{PREFIX}JWT_SECRET: must be at least {MIN_JWT_SECRET_CHARS} characters"
            )

    def _check_replicas(self) -> None:
        if self.hold_replicas < 0:
            raise ValueError(f"{PREFIX}HOLD_REPLICAS: must be 0 (don't wait) or more")
        if self.hold_replicas_timeout_ms < 1:  # WAIT with timeout 0 would block forever
            raise ValueError(f"{PREFIX}HOLD_REPLICAS_TIMEOUT_MS: must be 1 or more")

    def _check_payments(self) -> None:
        if self.payment_verifier not in PAYMENT_VERIFIERS:
            raise ValueError(
                f"{PREFIX}PAYMENT_VERIFIER: {self.payment_verifier!r} is not one of"
                f" {', '.join(PAYMENT_VERIFIERS)}"
            )
        if self.payment_verifier == "hmac" and len(self.payment_secret) < MIN_PAYMENT_SECRET_CHARS:
            raise ValueError(
                f"{PREFIX}PAYMENT_SECRET: the hmac verifier needs a secret of at least"
                f" {MIN_PAYMENT_SECRET_CHARS} characters"
            )
        if self.payment_seconds < 0:
            raise ValueError(f"{PREFIX}PAYMENT_SECONDS: must be 0 (the hold time) or more")

    @property
    def cors_origin_list(self) -> list[str]:
        return [origin.strip() for origin in self.cors_origins.split(",") if origin.strip()]

    @property
    def trusted_networks(self) -> tuple[IPNetwork, ...]:
        return proxy_networks(self.trusted_proxies)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from ``SEATLOCK_*`` variables; keyword overrides win."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = env.get(PREFIX + f.name.upper())
            if raw is not None and raw != "":
                values[f.name] = _parse(f.type, raw, f.name)
        values.update(overrides)
        return cls(**values)

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    @property
    def payment_deadline_seconds(self) -> int:
        """How long a pending ticket may stay unpaid before it is cancelled."""
        return self.payment_seconds or self.hold_seconds

    @property
    def outbox_dir(self) -> Path:
        return self.data_dir / "outbox"

    @property
    def media_dir(self) -> Path:
        return self.data_dir / "media"


@functools.lru_cache(maxsize=8)
def proxy_networks(spec: str) -> tuple[IPNetwork, ...]:
    """The networks of a comma-separated list of IPs and CIDRs (``SEATLOCK_TRUSTED_PROXIES``)."""
    try:
        return tuple(
            ipaddress.ip_network(p.strip(), strict=False) for p in spec.split(",") if p.strip()
        )
    except ValueError:
        raise ValueError(
            f"{PREFIX}TRUSTED_PROXIES: {spec!r} is not a list of IPs or CIDRs"
        ) from None


# --- Redis Cluster: SEATLOCK_REDIS_URL=redis+cluster://[user:password@]host:port[,host:port...]
# (TLS: rediss+cluster://), the seed nodes, as the `limits` library spells it. Parsed here only.
CLUSTER_SCHEMES = {"redis+cluster": False, "rediss+cluster": True}  # scheme -> TLS
REDIS_SCHEMES = ("redis", "rediss", "unix", *CLUSTER_SCHEMES)


@dataclass(frozen=True, slots=True)
class ClusterURL:
    """A ``redis+cluster://`` URL: its seed nodes, credentials and whether it uses TLS."""

    nodes: tuple[tuple[str, int], ...]
    username: str | None = None
    password: str | None = field(default=None, repr=False)  # never in a log line
    tls: bool = False


def is_cluster_url(url: str) -> bool:
    return url.partition("://")[0].lower() in CLUSTER_SCHEMES


@functools.lru_cache(maxsize=8)
def redis_cluster_nodes(url: str) -> ClusterURL | None:
    """The cluster a ``redis+cluster://`` URL names; None for a single-node URL (or none)."""
    scheme, sep, rest = url.partition("://")
    if url and (not sep or scheme.lower() not in REDIS_SCHEMES):
        raise ValueError(f"{PREFIX}REDIS_URL: the scheme must be one of {', '.join(REDIS_SCHEMES)}")
    if not is_cluster_url(url):
        return None
    userinfo, _, hosts = rest.rpartition("@")
    hosts, _, database = hosts.partition("/")
    if database.strip("/") not in ("", "0"):
        raise ValueError(f"{PREFIX}REDIS_URL: a Redis Cluster has database 0 only")
    user, _, password = userinfo.partition(":")
    return ClusterURL(
        nodes=tuple(_host_port(node) for node in hosts.split(",")),
        username=unquote(user) or None,
        password=unquote(password) or None,
        tls=CLUSTER_SCHEMES[scheme.lower()],
    )


def _host_port(node: str) -> tuple[str, int]:
    host, _, port = node.strip().rpartition(":")
    host = host.strip("[]")  # an IPv6 address: [::1]:7000
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{PREFIX}REDIS_URL: {node!r} is not a cluster seed host:port")
    return host, int(port)


def _parse(kind: Any, raw: str, name: str) -> Any:
    kind = kind if isinstance(kind, str) else getattr(kind, "__name__", str(kind))
    try:
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind == "bool":
            if raw.lower() in {"1", "true", "yes", "on"}:
                return True
            if raw.lower() in {"0", "false", "no", "off"}:
                return False
            raise ValueError(raw)
        if kind == "Path":
            return Path(raw)
    except ValueError:
        raise ValueError(f"{PREFIX}{name.upper()}: cannot parse {raw!r} as {kind}") from None
    return raw
