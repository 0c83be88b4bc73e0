"""The seat-state engine: key names, Lua scripts and their transport, holds, mirrors, events,
expiry. No HTTP, SQL or CLI in here: PostgreSQL reaches it through ``LayoutSource``."""
