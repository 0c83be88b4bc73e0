"""Engine and script tests get ``redis`` on their own database (tests/lua/support.py)."""

from tests.lua.support import engine_db_redis  # noqa: F401  (registers the ``redis`` fixture)
