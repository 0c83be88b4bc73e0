"""Engine and script tests get ``redis`` on their own database, and run on every transport
(tests/lua/support.py)."""

from tests.lua.support import (  # noqa: F401  (registers the fixtures)
    engine_db_redis,
    transport,
    transport_kind,
    transports,
)
