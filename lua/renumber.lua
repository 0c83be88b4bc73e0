-- renumber: Redis came back from an older snapshot (restarted from an RDB or AOF behind its last
-- writes, or failed over to a replica that lagged): the screening's version may be lower than
-- versions its watchers have seen, and they would take its maps for stale ones and keep theirs.
-- Move the version past every one handed out before, to the clock's, as a load does (versions
-- grow by one per change from now_ms * 1000 at a load: far fewer than a thousand changes a
-- millisecond), then publish an empty reset that says "loaded": the event log starts again,
-- mirrors are dropped, and every process sends the screening's watchers its map
-- (api/websockets.py NewMaps). Nothing else changes. A version already past started_ms * 1000
-- was given since Redis started (a load, or another process's renumber): nothing is done, so the
-- processes that all noticed the restart renumber the screening once.
-- KEYS: the common nine (lib.lua).
-- ARGV: screening_id, now_ms, started_ms (the latest the Redis that restarted can have started,
--       on its clock).
-- Returns {OK, version} (0: already numbered since) or {NOT_LOADED}.
if not is_ready() then
  return {NOT_LOADED}
end
local now = tonumber(ARGV[2])
local version = tonumber(redis.call('GET', VERSION) or '0')
local started = tonumber(ARGV[3]) * 1000
if version >= started then
  return {OK, 0}
end
redis.call('SET', VERSION, string.format('%.0f', math.max(now * 1000, started)))
return {OK, publish(now, {}, ',"reset":true,"loaded":true')}
