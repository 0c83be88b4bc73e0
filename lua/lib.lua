-- Shared prelude: seatlock/scripts.py puts it in front of every other script of this folder.
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
-- ARGV[1] is always the screening id and ARGV[2] the caller's clock, now in ms.
-- A hold's deadline is max(exp, pin): exp is what the user sees and may extend, pin keeps a
-- claimed hold alive while PostgreSQL commits. Its lease key lives exactly until the deadline.
-- Status codes (seatlock/scripts.py Status): every reply is {status, ...}.
local OK, NOT_LOADED, STARTED, UNKNOWN, BOOKED, TAKEN, TOO_MANY, NOT_HELD, EXPIRED =
  0, 1, 2, 3, 4, 5, 6, 7, 8
local META, SEATS, SOLD, HOLDS, DEADLINES, VERSION, EVENTS, OWNERS =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local LEASE0 = 8

local function is_ready()
  return redis.call('HGET', META, 'ready') == '1'
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
-- may outlive the lease until the expiry listener or the sweep catches up.
local function is_live(hold, lease, now)
  return hold ~= nil and deadline(hold) > now and redis.call('EXISTS', lease) == 1
end

local function owns(hold, lease, user, now)
  return is_live(hold, lease, now) and hold.user == user and hold.exp > now
end

-- SET ... PX: the lease and its TTL are written in one command (never SETNX then EXPIRE).
local function write_hold(seat, lease, hold, now)
  local until_ms = deadline(hold)
  redis.call('SET', lease, hold.user, 'PX', until_ms - now)
  redis.call('HSET', HOLDS, seat,
    string.format('%d:%d:%d:%d', hold.user, hold.exp, hold.first, hold.pin))
  redis.call('ZADD', DEADLINES, until_ms, seat)
  redis.call('ZADD', OWNERS, hold.user, seat)
end

local function drop_hold(seat, lease)
  if lease then
    redis.call('DEL', lease)
  end
  redis.call('HDEL', HOLDS, seat)
  redis.call('ZREM', DEADLINES, seat)
  redis.call('ZREM', OWNERS, seat)
end

local function change(seat, status, user, expires_at)
  return {seat_id = tonumber(seat), status = status, user_id = user or cjson.null,
    expires_at = expires_at or cjson.null}
end

-- One event per script run, published inside it, so events are ordered like the changes.
local function publish(now, changes)
  if #changes == 0 then
    return
  end
  redis.call('INCR', VERSION)
  redis.call('PUBLISH', EVENTS,
    cjson.encode({screening_id = tonumber(ARGV[1]), ts = now, seats = changes}))
end

-- Holds of user in this screening that still block their seats (for the per-user cap). The
-- owners zset keeps this O(log n + the user's holds) in a room full of holds.
local function count_live_holds(user, now)
  local count = 0
  for _, seat in ipairs(redis.call('ZRANGEBYSCORE', OWNERS, user, user)) do
    local hold = read_hold(seat)
    if hold ~= nil and hold.user == user and deadline(hold) > now then
      count = count + 1
    end
  end
  return count
end

