"""Failed-login throttling: fixed windows counted in Redis, per account and per client address.

Every process shares the counters, so the limits hold across any number of API workers.
"""

from __future__ import annotations

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from seatlock import keys
from seatlock.errors import TooManyRequests
from seatlock.settings import Settings

TOO_MANY = "Too many failed login attempts; try again later"
RESET_MAILS_PER_WINDOW = 3  # per email, per reset_token_minutes: no mail-bombing an inbox


async def admit_login(redis: Redis, settings: Settings, email: str, address: str) -> None:
    """Count this attempt against the account before the password is checked, or raise 429.

    The attempt is counted up front so that parallel guesses cannot all pass the check before
    any of them is recorded; a successful login clears the account's counter again.
    """
    window = settings.login_window_seconds
    address_key = keys.login_failures_address(address)
    account_key = keys.login_failures_account(email)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.get(address_key)
        pipe.ttl(address_key)
        _count(pipe, account_key, window)
        pipe.ttl(account_key)
        address_count, address_ttl, _, account_count, account_ttl = await pipe.execute()
    if int(address_count or 0) >= settings.login_max_failures_per_ip:
        raise TooManyRequests(TOO_MANY, retry_after=_retry_after(address_ttl, window))
    if int(account_count) > settings.login_max_failures:
        raise TooManyRequests(TOO_MANY, retry_after=_retry_after(account_ttl, window))


async def login_failed(redis: Redis, settings: Settings, address: str) -> None:
    """Record a failure against the client address (the account's was counted on admission)."""
    async with redis.pipeline(transaction=True) as pipe:
        _count(pipe, keys.login_failures_address(address), settings.login_window_seconds)
        await pipe.execute()


async def login_succeeded(redis: Redis, email: str) -> None:
    await redis.delete(keys.login_failures_account(email))


async def admit_reset_mail(redis: Redis, settings: Settings, email: str) -> bool:
    """Whether another password reset mail may go to this address now."""
    async with redis.pipeline(transaction=True) as pipe:
        _count(
            pipe, keys.rate_limit(f"reset-mail:{email.lower()}"), settings.reset_token_minutes * 60
        )
        _, sent = await pipe.execute()
    return int(sent) <= RESET_MAILS_PER_WINDOW


def _count(pipe: Pipeline, key: str, window: int) -> None:
    # SET NX EX starts the window on the first failure; INCR keeps the TTL, so the window is
    # fixed and a key can never be left without one.
    pipe.set(key, 0, ex=window, nx=True)
    pipe.incr(key)


def _retry_after(ttl: int, window: int) -> int:
    return ttl if ttl > 0 else window
