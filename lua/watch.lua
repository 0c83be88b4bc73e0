-- watch: a process has watchers of the screening: keep its event log (lib.lua publish) for
-- ttl_ms more. LOG exists only while some process marks the screening watched: publish appends
-- to an existing LOG alone (XADD NOMKSTREAM), so a screening nobody watches pays no log entry
-- and keeps no log in memory. The LOG made here is empty: its entries are the events published
-- from now on, consecutive versions ending at VERSION as resume.lua needs them; a watcher that
-- resumes from before that gets the whole map. Rerun before ttl_ms passes (seatlock/engine/
-- events.py refreshes every watched screening), the LOG and its entries stay; once it expires,
-- nothing is logged until the next watch. A reset (load, refresh) empties LOG but keeps it.
-- KEYS: the common nine (lib.lua).
-- ARGV: screening_id, now_ms, ttl_ms.
-- Returns {OK, 1} when LOG was made now, {OK, 0} when it existed, or {NOT_LOADED}.
if not is_ready() then
  return {NOT_LOADED}
end
local made = 0
if redis.call('EXISTS', LOG) == 0 then
  -- An empty stream: the entry made with it is trimmed at once (MAXLEN 0).
  redis.call('XADD', LOG, 'MAXLEN', '0', '*', 'v', '0')
  made = 1
end
redis.call('PEXPIRE', LOG, ARGV[3])
return {OK, made}
