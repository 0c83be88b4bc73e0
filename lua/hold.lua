-- hold: hold seats for one user, all or nothing, under one grant.
-- KEYS: the common nine (lib.lua), then the lease of each seat in ARGV order, then the rows
-- hash (seatlock/keys.py screening_rows), read only when the screening's single-gap rule is on.
-- ARGV: screening_id, now_ms, user_id, hold_ms, max_seats_per_user, grant, seat_id...
-- grant: the caller's token for this request (no ':'); the seats held now get leases valued
-- "user_id:grant". Seats the user already held keep their hold as is, grant included, so
-- releasing this grant never frees what an earlier request of the same user took.
-- Returns {OK, version, seat, expires_at, lease, ...} for every seat asked (lease: the seat's
-- lease value "user:grant", or the bare user id of a lease older than grants; version: the
-- screening's version this hold made, 0 when every seat was already the user's), or
-- {NOT_LOADED} | {STARTED} | {UNKNOWN, seat...} | {BOOKED, seat...} | {TAKEN, seat...} |
-- {TOO_MANY, max_seats_per_user} (the user's live holds and unpaid tickets' seats, owe.lua,
-- would pass the cap) | {GAP, seat, seat_number, row_label} (the single-gap rule is on, META's
-- "gaps" is "1", and the hold would leave that free seat stranded: lib.lua stranded()).
-- Refusals change nothing. A hold ends hold_ms after now, or when the screening starts if that
-- comes first: a seat cannot be booked once its screening has started (claim.lua), so a hold that
-- outlived the start would promise a time to pay that no payment could use.
local meta = redis.call('HMGET', META, 'ready', 'starts_at', 'gaps', 'log')
log_length = meta[4] -- read with the rest: publish needs no HGET of its own (lib.lua)
if meta[1] ~= '1' then
  return {NOT_LOADED}
end
local now, user = tonumber(ARGV[2]), tonumber(ARGV[3])
if now >= tonumber(meta[2]) then
  return {STARTED}
end
local n, me = #ARGV - 6, string.format('%d', user) -- seat j is ARGV[6 + j]

-- {status, seat...} with the seats j whose flags[j] is value, or nil when there is none.
local function refusal(status, flags, value)
  local reply
  for j = 1, n do
    if flags[j] == value then
      reply = reply or {status}
      reply[#reply + 1] = tonumber(ARGV[6 + j])
    end
  end
  return reply
end

-- Each check reads every seat in one call.
local refused = refusal(UNKNOWN, call_list('SMISMEMBER', SEATS, ARGV, 7), 0)
if refused then
  return refused
end
local sold = call_list('HMGET', SOLD, ARGV, 7)
for j = 1, n do
  sold[j] = sold[j] ~= false
end
refused = refusal(BOOKED, sold, true)
if refused then
  return refused
end

-- A hold blocks its seat while its lease exists and its deadline is ahead: the index may
-- outlive the lease until the expiry listener or the sweep catch up. state[j] starts as the
-- lease's value (false: none) and becomes false (free), true (taken by someone else) or stays the
-- lease's value (the user's own live hold, kept as it is): no table besides the reply's.
local state, leased = call_list('MGET', nil, KEYS, LEASE0 + 1, LEASE0 + n), {}
for j = 1, n do
  if state[j] then
    leased[#leased + 1] = ARGV[6 + j]
  end
end
local records, k, expires = call_list('HMGET', HOLDS, leased), 0, {}
for j = 1, n do
  if state[j] then
    k = k + 1
    local live = false
    if records[k] then
      local holder, exp, until_ms = hold_times(records[k])
      if until_ms > now then
        expires[j] = exp
        live = holder ~= me or state[j] -- true: someone else's; the lease value: the user's
      end
    end
    state[j] = live
  end
end
refused = refusal(TAKEN, state, true)
if refused then
  return refused
end
local fresh, seats, leases = 0, {}, {} -- the seats this hold takes, and their leases
for j = 1, n do
  if not state[j] then
    fresh = fresh + 1
    seats[fresh], leases[fresh] = ARGV[6 + j], KEYS[LEASE0 + j]
  end
end
local cap = tonumber(ARGV[5])
if fresh > 0 and count_live_holds(me, now) + fresh > cap then
  return {TOO_MANY, cap}
end

if meta[3] == '1' and fresh > 0 then
  -- The single-gap rule (lib.lua stranded) for the seats this hold takes (not the user's
  -- already), on every row they sit in: {GAP, seat, seat_number, row_label} for the first seat
  -- it would strand. Seats the rows hash does not know (a screening loaded before it existed)
  -- are not checked. Inline, not a function: a plain hold pays nothing for it.
  local row_seats, busy_seats, stranded = geometry_helpers()
  local rows_key = KEYS[#KEYS]
  local rows, chosen, seen, fields = call_list('HMGET', rows_key, seats), {}, {}, {}
  for j = 1, #seats do
    chosen[seats[j]] = true
    if rows[j] and not seen[rows[j]] then
      seen[rows[j]], fields[#fields + 1] = true, rows[j]
    end
  end
  for k = 1, #fields do
    local ids, nums = row_seats(redis.call('HGET', rows_key, 'r' .. fields[k]))
    local j = stranded(ids, nums, busy_seats(ids, now), chosen)
    if j then
      return {GAP, tonumber(ids[j]), nums[j], redis.call('HGET', rows_key, 'l' .. fields[k])}
    end
  end
end

-- Everything checked; from here on only writes.
local exp, lease = math.min(now + tonumber(ARGV[4]), tonumber(meta[2])), me .. ':' .. ARGV[6]
for j = 1, n do
  if not state[j] then
    expires[j], state[j] = exp, lease
  end
end
local version = 0
if fresh > 0 then
  write_holds(seats, leases, {user = user, exp = exp, first = now, pin = 0, lease = lease}, now)
  version = publish(now, changes_of(seats, 'reserved', me, exp))
end
local reply = {OK, version}
for j = 1, n do
  reply[3 * j], reply[3 * j + 1], reply[3 * j + 2] = tonumber(ARGV[6 + j]), expires[j], state[j]
end
return reply
