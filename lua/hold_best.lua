-- hold_best: choose the best block of count adjacent free seats in one row and hold it for one
-- user under one grant, in one step: two callers never get overlapping blocks, and neither is
-- refused while a block of its size remains.
-- KEYS: the common eight (lib.lua), then the lease of each candidate seat in ARGV order, then the
-- rows hash (seatlock/keys.py screening_rows).
-- ARGV: screening_id, now_ms, user_id, hold_ms, max_seats_per_user, grant, count, seat_type,
--       focal_row6, focal_col6, seat_id... (the candidates: every seat of the rows hash that
--       seat_type admits, as the caller last read it).
-- seat_type "" admits one type per block, any but "wheelchair", standard blocks before all
-- others; a type admits only seats of that type.
-- The best block, among those made only of free admitted seats of one type with consecutive
-- numbers in one row: standard first (seat_type ""), then fewest stranded seats (lib.lua
-- stranded(): with the single-gap rule on, META's "gaps" = "1", only blocks stranding none),
-- then the least distance to the focal point, then the front-most row, then the lowest number.
-- Distance, in exact integers: rows are numbered 1..n front to back (the rows hash) and a block's
-- column is the mean of its first and last seat number; with r its row and c its column,
-- d = (6 * r - focal_row6)^2 + (6 * c - focal_col6)^2, i.e. 36 times the squared distance with
-- one row as far as one seat number. The caller passes the focal point times six.
-- Returns {OK, version, seat, expires_at, lease, ...} for the seats held, in seat-number order,
-- or {NOT_LOADED} | {STARTED} | {TOO_MANY, max_seats_per_user} | {NO_BLOCK, count} |
-- {STALE} (an admitted seat of the rows hash has no lease in KEYS: the caller's geometry is
-- older than the screening's, it reads it again). Refusals change nothing.
local meta = redis.call('HMGET', META, 'ready', 'starts_at', 'gaps')
if meta[1] ~= '1' then
  return {NOT_LOADED}
end
local now, user, count = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[7])
if now >= tonumber(meta[2]) then
  return {STARTED}
end
local me, cap, wanted = string.format('%d', user), tonumber(ARGV[5]), ARGV[8]
if count_live_holds(me, now) + count > cap then
  return {TOO_MANY, cap}
end
local rows_key = KEYS[#KEYS]
local lease_of = {}
for j = 11, #ARGV do
  lease_of[ARGV[j]] = KEYS[LEASE0 + j - 10]
end
local busy = {}
for _, seat in ipairs(redis.call('HKEYS', SOLD)) do
  busy[seat] = true
end
for _, seat in ipairs(redis.call('ZRANGEBYSCORE', DEADLINES, '(' .. ARGV[2], '+inf')) do
  busy[seat] = true
end

local function admitted(kind)
  if wanted == '' then
    return kind ~= 'wheelchair'
  end
  return kind == wanted
end

-- Stranded seats (0, 1 or 2) next to the block ids[a..b]: a free neighbour whose other side is
-- unavailable or the row's end (lib.lua stranded(), for one block).
local function strands(ids, nums, a, b)
  local found = 0
  if a > 1 and nums[a - 1] == nums[a] - 1 and not busy[ids[a - 1]] and
      (a == 2 or nums[a - 2] ~= nums[a - 1] - 1 or busy[ids[a - 2]]) then
    found = found + 1
  end
  local last = #ids
  if b < last and nums[b + 1] == nums[b] + 1 and not busy[ids[b + 1]] and
      (b + 1 == last or nums[b + 2] ~= nums[b + 1] + 1 or busy[ids[b + 2]]) then
    found = found + 1
  end
  return found
end

local rule, focal_row, focal_col = meta[3] == '1', tonumber(ARGV[9]), tonumber(ARGV[10])
local best -- {tier, strands, distance, ids, first index}
local function consider(row, ids, nums, types, a)
  local b = a + count - 1
  local tier = (wanted == '' and types[a] ~= 'standard') and 1 or 0
  local left = strands(ids, nums, a, b)
  if rule and left > 0 then
    return
  end
  local dr, dc = 6 * row - focal_row, 3 * (nums[a] + nums[b]) - focal_col
  local d = dr * dr + dc * dc
  if best == nil or tier < best[1] or (tier == best[1] and (left < best[2] or
      (left == best[2] and d < best[3]))) then
    best = {tier, left, d, ids, a}
  end
end

local rows = tonumber(redis.call('HGET', rows_key, 'n') or '0')
for row = 1, rows do
  local ids, nums, types = row_seats(redis.call('HGET', rows_key, 'r' .. row) or '')
  local run = 0 -- admitted free seats of one type with consecutive numbers, ending at j
  for j = 1, #ids do
    local ok = admitted(types[j])
    if ok and not lease_of[ids[j]] then
      return {STALE}
    end
    ok = ok and not busy[ids[j]]
    if ok and run > 0 and nums[j] == nums[j - 1] + 1 and types[j] == types[j - 1] then
      run = run + 1
    else
      run = ok and 1 or 0
    end
    if run >= count then
      consider(row, ids, nums, types, j - count + 1)
    end
  end
end
if best == nil then
  return {NO_BLOCK, count}
end

-- Everything checked; from here on only writes.
local exp, lease, seats, leases = now + tonumber(ARGV[4]), me .. ':' .. ARGV[6], {}, {}
for j = best[5], best[5] + count - 1 do
  seats[#seats + 1] = best[4][j]
  leases[#leases + 1] = lease_of[best[4][j]]
end
write_holds(seats, leases, {user = user, exp = exp, first = now, pin = 0, lease = lease}, now)
local reply = {OK, publish(now, changes_of(seats, 'reserved', me, exp))}
for j = 1, count do
  reply[3 * j], reply[3 * j + 1], reply[3 * j + 2] = tonumber(seats[j]), exp, lease
end
return reply
