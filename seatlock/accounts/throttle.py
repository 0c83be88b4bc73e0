"""Failed-login throttling: fixed windows counted in Redis, shared by every API process.

Three counters, so that a stranger cannot turn the limits against an account's owner:
- per account and client address (``login_max_failures``): the guesser's own lock; the owner,
  signing in from elsewhere, never meets it;
- per client address, whatever the account (``login_max_failures_per_ip``): one address cannot
  spray guesses over many accounts;
- per account from anywhere (``login_max_failures_per_account``): a backstop against guesses
  spread over many addresses. Anyone can run it down, so it does not apply to an address the
  account signed in from within KNOWN_ADDRESS_DAYS: strangers guessing from elsewhere cannot
  lock the owner out of where the owner signs in (a new place waits for the window's end).
Client addresses come from api/auth.py ``client_address`` (forwarding headers only from
``SEATLOCK_TRUSTED_PROXIES``), so a client cannot rotate its address by header.
"""

from __future__ import annotations

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterPipeline, RedisCluster

from seatlock import keys
from seatlock.accounts import emails
from seatlock.errors import TooManyRequests
from seatlock.settings import Settings

TOO_MANY = "Too many failed login attempts; try again later"
RESET_MAILS_PER_WINDOW = 3  # per email, per reset_token_minutes: no mail-bombing an inbox
KNOWN_ADDRESS_DAYS = 30  # how long a sign-in exempts its address from the account-wide limit
TICKET_MAIL_EVERY_S = 60  # a ticket's confirmation mail, resent at most this often
TICKET_MAIL_SENT = "The ticket's confirmation was sent moments ago; try again later"


async def admit_login(
    redis: Redis | RedisCluster, settings: Settings, email: str, address: str
) -> None:
    """Count this attempt against the (account, address) pair before the password is checked,
    or raise 429.

    The pair is counted up front so that parallel guesses cannot all pass the check before any
    of them is recorded; a successful login clears it again. The address and account counters
    count failures only (``login_failed``), so attempts refused here never add to the counter
    that would lock the owner out from everywhere.
    """
    window = settings.login_window_seconds
    address_key = keys.login_failures_address(address)
    account_key = keys.login_failures_account(emails.key(email))
    pair_key = keys.login_failures_pair(emails.key(email), address)
    async with _pipeline(redis) as pipe:
        pipe.get(address_key)
        pipe.ttl(address_key)
        pipe.get(account_key)
        pipe.ttl(account_key)
        _count(pipe, pair_key, window)
        pipe.ttl(pair_key)
        pipe.exists(keys.login_known(emails.key(email), address))
        counts = await pipe.execute()
    address_count, address_ttl, account_count, account_ttl, _, pair_count, pair_ttl, known = counts
    if int(address_count or 0) >= settings.login_max_failures_per_ip:
        raise TooManyRequests(TOO_MANY, retry_after=_retry_after(address_ttl, window))
    if int(pair_count) > settings.login_max_failures:
        raise TooManyRequests(TOO_MANY, retry_after=_retry_after(pair_ttl, window))
    if int(account_count or 0) >= settings.login_max_failures_per_account and not known:
        raise TooManyRequests(TOO_MANY, retry_after=_retry_after(account_ttl, window))


async def login_failed(
    redis: Redis | RedisCluster, settings: Settings, email: str, address: str
) -> None:
    """Record a failure against the address and the account (the pair's was counted up front)."""
    window = settings.login_window_seconds
    async with _pipeline(redis) as pipe:
        _count(pipe, keys.login_failures_address(address), window)
        _count(pipe, keys.login_failures_account(emails.key(email)), window)
        await pipe.execute()


async def login_succeeded(redis: Redis | RedisCluster, email: str, address: str) -> None:
    """Clear the pair's counter and mark the address as one the account signs in from. The
    account's counter stays: a success from one address does not forgive guesses spread over
    others."""
    account = emails.key(email)
    async with _pipeline(redis) as pipe:
        pipe.delete(keys.login_failures_pair(account, address))
        pipe.set(keys.login_known(account, address), 1, ex=KNOWN_ADDRESS_DAYS * 86_400)
        await pipe.execute()


async def login_unchecked(redis: Redis | RedisCluster, email: str, address: str) -> None:
    """Take back the pair's count of an attempt that never had its password checked (answered
    503: PostgreSQL down, or the hashing lane full): retrying it is not guessing. A counter gone
    meanwhile (its window ended) is not made again: DECR would leave -1 without a TTL."""
    pair_key = keys.login_failures_pair(emails.key(email), address)
    if await redis.decr(pair_key) <= 0:
        await redis.delete(pair_key)


async def admit_ticket_mail(redis: Redis | RedisCluster, ticket_id: int, every_s: int) -> None:
    """One confirmation mail per ticket per ``every_s`` (a resend, retried or repeated, does not
    flood the owner's mailbox or the mail server), or 429 with the seconds left. A mail not sent
    after all gives its turn back (``ticket_mail_failed``)."""
    key = keys.rate_limit(f"ticket-mail:{ticket_id}")
    if not await redis.set(key, 1, ex=every_s, nx=True):
        left = await redis.ttl(key)
        raise TooManyRequests(TICKET_MAIL_SENT, retry_after=_retry_after(left, every_s))


async def ticket_mail_failed(redis: Redis | RedisCluster, ticket_id: int) -> None:
    await redis.delete(keys.rate_limit(f"ticket-mail:{ticket_id}"))


async def admit_reset_mail(redis: Redis | RedisCluster, settings: Settings, email: str) -> bool:
    """Whether another password reset mail may go to this address now."""
    async with _pipeline(redis) as pipe:
        _count(
            pipe,
            keys.rate_limit(f"reset-mail:{emails.key(email)}"),
            settings.reset_token_minutes * 60,
        )
        _, sent = await pipe.execute()
    return int(sent) <= RESET_MAILS_PER_WINDOW


def _pipeline(redis: Redis | RedisCluster) -> Pipeline | ClusterPipeline:
    """MULTI on one node. A cluster cannot run MULTI across slots (the counters' keys hash
    apart): there the commands are pipelined per node, and a counter whose window ends exactly
    between its SET NX and INCR is left without a TTL (INCR recreates it), which the window's
    next start never repairs: a lockout until the key is deleted. Rare; counters under one tag
    per account would close it."""
    if isinstance(redis, RedisCluster):
        return redis.pipeline()
    return redis.pipeline(transaction=True)


def _count(pipe: Pipeline | ClusterPipeline, key: str, window: int) -> None:
    # SET NX EX starts the window on the first failure; INCR keeps the TTL, so the window is
    # fixed and a key can never be left without one.
    pipe.set(key, 0, ex=window, nx=True)
    pipe.incr(key)


def _retry_after(ttl: int, window: int) -> int:
    return ttl if ttl > 0 else window
