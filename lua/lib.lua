-- Shared prelude: seatlock/engine/scripts.py puts it in front of every other script in lua/.
--
-- Every script of a screening gets the same first eight KEYS (all with the screening's hash tag):
--   KEYS[1] meta: hash, starts_at (ms) and ready = "1"
--   KEYS[2] seats: set of the room's seat ids
--   KEYS[3] sold: hash seat -> user
--   KEYS[4] holds: hash seat -> "user:exp:first:pin" (ms), the index of holds
--   KEYS[5] deadlines: zset seat -> the hold's deadline (ms), for the sweep
--   KEYS[6] version: integer, bumped on every published change
--   KEYS[7] events: the pub/sub channel
--   KEYS[8] owners: zset seat -> user, for the per-user cap
--   KEYS[8 + i]: the lease of the i-th seat argument, when the script touches leases.
-- ARGV[1] is always the screening id and ARGV[2] now in ms, on Redis's clock as the caller reads
-- it (seatlock/engine/clock.py: the host's clock plus its measured offset to Redis TIME), so hosts
-- whose own clocks differ write the same deadlines; passed in, so tests can move time.
-- A hold's deadline is max(exp, pin): exp is what the user sees and may extend, pin keeps a
-- claimed hold alive while PostgreSQL commits. Its lease key lives exactly until the deadline;
-- its value is "user:grant": the holder and the token of the grant (one hold request) that took
-- the seat, so a grant releases exactly what it took (release_grant.lua), as redis-py's Lock
-- releases only with its own token. A lease written before grants existed holds the user id
-- alone: it belongs to no grant, and every script keeps its value as is. The index, both zsets
-- and the lease are written together.
-- Status codes: every reply is {status, ...}. The constants (OK, NOT_LOADED, TAKEN, ...) are
-- defined by a line that seatlock/engine/scripts.py source() generates from its Status enum and
-- puts in front of this prelude: add a code there, never assign one here or in a script.
-- publish_command ('PUBLISH', or 'SPUBLISH' on a cluster whose primaries all run Redis >= 7) is
-- defined on the line after them, by the catalogue the script belongs to (scripts.py source()).
local META, SEATS, SOLD, HOLDS, DEADLINES, VERSION, EVENTS, OWNERS =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local LEASE0 = 8
-- Values per command when a list goes into one call (Lua's unpack refuses ~8000). Even, so a
-- field/value or score/member pair never straddles two calls.
local BATCH = 1000

local function is_ready()
  return redis.call('HGET', META, 'ready') == '1'
end

-- redis.call(command, key, list[first..last]) (no key when key is nil) in calls of at most BATCH
-- values; returns the reply, or the replies joined when it took several calls.
local function call_list(command, key, list, first, last)
  first, last = first or 1, last or #list
  if last < first then
    return {}
  elseif last - first < BATCH then
    if key then
      return redis.call(command, key, unpack(list, first, last))
    end
    return redis.call(command, unpack(list, first, last))
  end
  local replies = {}
  for from = first, last, BATCH do
    local reply = call_list(command, key, list, from, math.min(from + BATCH - 1, last))
    if type(reply) == 'table' then
      for j = 1, #reply do
        replies[#replies + 1] = reply[j]
      end
    end
  end
  return replies
end

local function parse_hold(raw)
  local user, exp, first, pin = string.match(raw, '^(%d+):(%d+):(%d+):(%d+)$')
  return {user = tonumber(user), exp = tonumber(exp), first = tonumber(first), pin = tonumber(pin)}
end

local function read_hold(seat)
  local raw = redis.call('HGET', HOLDS, seat)
  if not raw then
    return nil
  end
  return parse_hold(raw)
end

local function deadline(hold)
  return math.max(hold.exp, hold.pin)
end

-- A hold counts only while both its deadline is ahead and its lease key still exists: the index
-- may outlive the lease until the expiry listener or the sweep catches up. Returns the lease's
-- value ("user:grant") when user owns the hold, else nil: a rewrite keeps the grant with it.
local function owned_lease(hold, lease, user, now)
  if hold == nil or hold.user ~= user or hold.exp <= now or deadline(hold) <= now then
    return nil
  end
  return redis.call('GET', lease) or nil
end

-- Write the same hold on every seat of seats (leases[j] is the lease of seats[j]), or on one
-- seat (seats and leases are then a seat and its lease); hold.lease is the leases' value
-- ("user:grant"). SET ... PX: each lease and its TTL are written in one command (never SETNX
-- then EXPIRE). Numbers go to Redis as strings made once: Redis would format a Lua number on
-- every use, slowly.
local function write_holds(seats, leases, hold, now)
  if type(seats) ~= 'table' then
    seats, leases = {seats}, {leases}
  end
  local until_ms = deadline(hold)
  local user, ttl = string.format('%d', hold.user), string.format('%d', until_ms - now)
  local score, value = string.format('%d', until_ms), hold.lease
  local record = string.format('%d:%d:%d:%d', hold.user, hold.exp, hold.first, hold.pin)
  local fields, members = {}, {}
  for j = 1, #seats do
    redis.call('SET', leases[j], value, 'PX', ttl)
    fields[2 * j - 1], fields[2 * j] = seats[j], record
    members[2 * j - 1], members[2 * j] = score, seats[j]
  end
  call_list('HSET', HOLDS, fields)
  call_list('ZADD', DEADLINES, members)
  for j = 1, #seats do
    members[2 * j - 1] = user
  end
  call_list('ZADD', OWNERS, members)
end

-- Every function of this prelude costs each script run a closure: one for both spellings.
local write_hold = write_holds

-- Drop the holds of seats from the index and both zsets, and delete the leases given (leases may
-- be shorter than seats, or empty: a lease already gone). Or one seat and its lease (or nil).
local function drop_holds(seats, leases)
  if type(seats) ~= 'table' then
    seats, leases = {seats}, {leases}
  end
  if #leases > 0 then
    call_list('DEL', nil, leases)
  end
  call_list('HDEL', HOLDS, seats)
  call_list('ZREM', DEADLINES, seats)
  call_list('ZREM', OWNERS, seats)
end

local drop_hold = drop_holds

-- A number (formatted), a string (as is: ids from ARGV or Redis, already decimal) or nil.
local function json_int(value)
  if value == nil then
    return 'null'
  elseif type(value) == 'number' then
    return string.format('%d', value)
  end
  return value
end

-- The entries of an event for seats (decimal strings) that all change the same way, as JSON
-- text: built by hand, as cjson costs several times more.
local function changes_of(seats, status, user, expires_at)
  local tail = ',"status":"' .. status .. '","user_id":' .. json_int(user) ..
    ',"expires_at":' .. json_int(expires_at) .. '}'
  local entries = {}
  for j = 1, #seats do
    entries[j] = '{"seat_id":' .. seats[j] .. tail
  end
  return entries
end

local function change(seat, status, user, expires_at)
  return changes_of({seat}, status, user, expires_at)[1]
end

-- One event per script run, published inside it, so events are ordered like the changes. Each
-- carries the version it made: a process mirroring the screening (seatlock/engine/mirrors.py)
-- applies events in version order and so notices one it did not get. reset: the screening was
-- loaded or rewritten (refresh), so mirrors start again from a fresh snapshot. Returns the
-- version, or 0 when there was nothing to publish.
local function publish(now, changes, reset)
  if #changes == 0 and not reset then
    return 0
  end
  local version = redis.call('INCR', VERSION)
  redis.call(publish_command, EVENTS, string.format('{"screening_id":%d,"version":%.0f,"ts":%d,' ..
    '"seats":[%s]%s}', ARGV[1], version, now, table.concat(changes, ','),
    reset and ',"reset":true' or ''))
  return version
end
