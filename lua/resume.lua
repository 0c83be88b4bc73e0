-- resume: what a watcher that last saw version `since` missed, read in one step with the version
-- it brings the watcher to (read-only). The events after since are replayable when LOG still
-- holds every one of them: LOG's entries are the events of consecutive versions ending at
-- VERSION (lib.lua publish), so that is when it holds at least version - since entries, and the
-- oldest of those is since + 1 (checked all the same: a key evicted on its own breaks the
-- invariant). Otherwise (since before the retained window, across a reset, ahead of VERSION, or
-- no log) the caller sends the whole map instead (seatmap.lua).
-- KEYS: the common nine (lib.lua).
-- ARGV: screening_id, now_ms, since.
-- Returns {OK, version, 1, event JSON...} the events after since, oldest first (none when since
-- is the version); {OK, version, 0} when they are not all in the log; or {NOT_LOADED}.
if not is_ready() then
  return {NOT_LOADED}
end
local version = redis.call('GET', VERSION) or '0'
local missed = tonumber(version) - tonumber(ARGV[3])
if missed == 0 then
  return {OK, version, 1}
elseif missed < 0 or missed > redis.call('XLEN', LOG) then
  return {OK, version, 0}
end
local entries = redis.call('XREVRANGE', LOG, '+', '-', 'COUNT', missed)
-- Each entry is {id, {'v', version, 'e', json}}.
if entries[1][2][2] ~= version or tonumber(entries[missed][2][2]) ~= tonumber(ARGV[3]) + 1 then
  return {OK, version, 0}
end
local reply = {OK, version, 1}
for i = missed, 1, -1 do
  reply[#reply + 1] = entries[i][2][4]
end
return reply
