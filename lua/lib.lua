-- Shared prelude: seatlock/engine/scripts.py puts it in front of every other script in lua/.
--
-- Every script of a screening gets the same first nine KEYS (all with the screening's hash tag):
--   KEYS[1] meta: hash, starts_at (ms) and ready = "1"
--   KEYS[2] seats: set of the room's seat ids
--   KEYS[3] sold: hash seat -> user
--   KEYS[4] holds: hash seat -> "user:exp:first:pin" (ms), the index of holds
--   KEYS[5] deadlines: zset seat -> the hold's deadline (ms), for the sweep
--   KEYS[6] version: integer, bumped on every published change
--   KEYS[7] events: the pub/sub channel
--   KEYS[8] owners: zset seat -> user, for the per-user cap
--   KEYS[9] log: stream of the latest events (v: version, e: JSON), for resuming watchers
--   KEYS[9 + i]: the lease of the i-th seat argument, when the script touches leases.
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
local META, SEATS, SOLD, HOLDS, DEADLINES, VERSION, EVENTS, OWNERS, LOG =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9]
local LEASE0 = 9
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

-- An index record's holder (as text), exp and deadline: fewer conversions than parse_hold.
local function hold_times(raw)
  local user, exp, pin = string.match(raw, '^(%d+):(%d+):%d+:(%d+)$')
  exp = tonumber(exp)
  if pin == '0' then
    return user, exp, exp
  end
  return user, exp, math.max(exp, tonumber(pin))
end

-- Seats of user (as text) in this screening that count toward the per-user cap: holds that still
-- block their seats, and seats of the user's pending (unpaid) tickets before their payment
-- deadline (owe.lua's markers "p:seat:due_ms", counted only while the seat is sold to the user).
-- The owners zset keeps this O(log n + the user's seats) in a room full of holds.
local function count_live_holds(user, now)
  local members, seats, owed = redis.call('ZRANGEBYSCORE', OWNERS, user, user), {}, {}
  for j = 1, #members do
    if string.byte(members[j]) == 112 then -- 'p': a pending ticket's seat
      local seat, due = string.match(members[j], '^p:(%d+):(%d+)$')
      if seat and tonumber(due) > now then
        owed[#owed + 1] = seat
      end
    else
      seats[#seats + 1] = members[j]
    end
  end
  local records, count = call_list('HMGET', HOLDS, seats), 0
  for j = 1, #seats do
    if records[j] then
      local holder, _, until_ms = hold_times(records[j])
      if holder == user and until_ms > now then
        count = count + 1
      end
    end
  end
  local buyers = call_list('HMGET', SOLD, owed)
  for j = 1, #owed do
    if buyers[j] == user then
      count = count + 1
    end
  end
  return count
end

-- The row geometry and the single-gap rule's helpers: row_seats, busy_seats, stranded. Built on
-- demand, so a script run pays for one closure here, not three, unless it uses them (a plain hold
-- with the rule off does not).
local function geometry_helpers()
  -- A row of the rows hash (seatlock/keys.py screening_rows): its JSON value
  -- [[id...], [number...], [type...]] (ids as text) in seat-number order as those three lists;
  -- a missing row (nil) as three empty ones. Neighbours in the lists are adjacent only when
  -- their numbers follow each other: a missing number is an aisle. JSON, as cjson decodes in C
  -- what a Lua pattern would take twice as long to match.
  local function row_seats(packed)
    if not packed then
      return {}, {}, {}
    end
    local row = cjson.decode(packed)
    return row[1], row[2], row[3]
  end

  -- busy[j]: seat ids[j] is unavailable now: sold, or held by anyone (the caller too) while its
  -- deadline is ahead (the deadlines zset holds every hold's deadline, as the index does).
  local function busy_seats(ids, now)
    local sold = call_list('HMGET', SOLD, ids)
    local until_ms = call_list('ZMSCORE', DEADLINES, ids)
    local busy = {}
    for j = 1, #ids do
      busy[j] = sold[j] ~= false or (until_ms[j] ~= false and tonumber(until_ms[j]) > now)
    end
    return busy
  end

  -- The single-gap rule on one row: the index of the first free seat that taking the seats of
  -- chosen (seat id -> true; seats newly taken now, none of them busy) would strand, else nil.
  -- Seat j is stranded when it stays free, it has an adjacent seat on at least one side (a
  -- lone seat between two aisles is not a gap), each side is an unavailable seat or the row's
  -- end (an aisle counts as an end), and at least one side is one of the chosen seats: a gap
  -- the selection did not touch is not this selection's doing.
  local function stranded(ids, nums, busy, chosen)
    local last = #ids
    for j = 1, last do
      if not busy[j] and not chosen[ids[j]] then
        local left = j > 1 and nums[j - 1] == nums[j] - 1
        local right = j < last and nums[j + 1] == nums[j] + 1
        local by_left = left and chosen[ids[j - 1]]
        local by_right = right and chosen[ids[j + 1]]
        if (by_left or by_right) and (not left or busy[j - 1] or by_left) and
            (not right or busy[j + 1] or by_right) then
          return j
        end
      end
    end
    return nil
  end

  return row_seats, busy_seats, stranded
end

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
-- loaded or rewritten (refresh), so mirrors start again from a fresh snapshot; true, or the
-- event's closing fields as JSON text when a reset says more (refresh.lua: ',"reset":true,
-- "moved":true'; load.lua: ',"reset":true,"loaded":true'). Returns the version, or 0 when there was nothing to publish.
-- The event also goes to LOG, capped near META's "log" (SEATLOCK_EVENT_LOG_LENGTH, written by
-- load and refresh; absent or 0: no log), so a watcher that reconnects with the last version it
-- saw is replayed what it missed (lua/resume.lua); only while LOG exists, which is while some
-- process marks the screening watched (lua/watch.lua): XADD NOMKSTREAM makes no LOG, so the
-- many screenings nobody watches pay no entry (~1.2 µs of a script on Redis 7.0) and keep none.
-- Invariant of LOG: its entries are the events of consecutive versions up to VERSION (every
-- INCR here appends one while it exists), which is why a reset empties it instead (XTRIM: the
-- key and its expiry stay): after a reset the map is not the sum of the events before it (seats
-- added or gone, sold seats rebuilt), so resuming across one must give a snapshot instead.
-- META's "log" when the script already read it with the rest of META (hold.lua, the hot path),
-- so publish does not read it again; false: publish reads it.
local log_length = false

local function publish(now, changes, reset)
  if #changes == 0 and not reset then
    return 0
  end
  local version = redis.call('INCR', VERSION)
  local event = string.format('{"screening_id":%d,"version":%.0f,"ts":%d,"seats":[%s]%s}',
    ARGV[1], version, now, table.concat(changes, ','),
    reset == true and ',"reset":true' or reset or '')
  redis.call(publish_command, EVENTS, event)
  local length = log_length or redis.call('HGET', META, 'log')
  if reset then
    redis.call('XTRIM', LOG, 'MAXLEN', '0')
  elseif length and length ~= '0' then
    redis.call('XADD', LOG, 'NOMKSTREAM', 'MAXLEN', '~', length, '*', 'v',
      string.format('%.0f', version), 'e', event)
  end
  return version
end
