-- hold_best: choose the best block of count adjacent free seats in one row and hold it for one
-- user under one grant, in one step: two callers never get overlapping blocks, and neither is
-- refused while a block of its size remains.
-- KEYS: the common nine (lib.lua), then the lease of every candidate seat (each seat of the
-- rows hash that seat_type admits, in the rows hash's order: row 1 first, then seat number),
-- then the rows hash (seatlock/keys.py screening_rows).
-- ARGV: screening_id, now_ms, user_id, hold_ms, max_seats_per_user, grant, count, seat_type,
--       focal_row6, focal_col6, stamp, offset * rows: offset i is the number of candidates in
--       the rows before row i (row i's k-th candidate has the lease KEYS[LEASE0 + offset_i + k]);
--       stamp: the rows hash's "v" these were computed from.
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
-- {STALE} (the rows hash is not the one the caller computed KEYS from: it reads it again).
-- Refusals change nothing. The hold ends when the screening starts if that comes before
-- now + hold_ms, as hold.lua's does.
local meta = redis.call('HMGET', META, 'ready', 'starts_at', 'gaps')
if meta[1] ~= '1' then
  return {NOT_LOADED}
end
local now, user, count = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[7])
if now >= tonumber(meta[2]) then
  return {STARTED}
end
local rows_key = KEYS[#KEYS]
local geometry = redis.call('HMGET', rows_key, 'v', 'n')
local rows = tonumber(geometry[2] or '0')
if geometry[1] ~= ARGV[11] or #ARGV ~= 11 + rows then
  return {STALE}
end
local me, cap, wanted = string.format('%d', user), tonumber(ARGV[5]), ARGV[8]
local row_seats, busy_seats = geometry_helpers()
if count_live_holds(me, now) + count > cap then
  return {TOO_MANY, cap}
end

-- Stranded seats (0, 1 or 2) next to the block ids[a..b]: a free neighbour whose other side is
-- unavailable or the row's end (lib.lua stranded(), for one block).
local function strands(nums, busy, a, b)
  local found = 0
  if a > 1 and nums[a - 1] == nums[a] - 1 and not busy[a - 1] and
      (a == 2 or nums[a - 2] ~= nums[a - 1] - 1 or busy[a - 2]) then
    found = found + 1
  end
  local last = #nums
  if b < last and nums[b + 1] == nums[b] + 1 and not busy[b + 1] and
      (b + 1 == last or nums[b + 2] ~= nums[b + 1] + 1 or busy[b + 2]) then
    found = found + 1
  end
  return found
end

-- Rows nearest the focal row first: a row can only beat the best block so far when its own
-- distance alone is no more than that block's, unless that block is second-rate (another type,
-- or it strands a seat), so the search stops early in a room with room left.
local rule, focal_row, focal_col = meta[3] == '1', tonumber(ARGV[9]), tonumber(ARGV[10])
local order = {}
for row = 1, rows do
  order[row] = row
end
local function row_distance(row)
  return (6 * row - focal_row) * (6 * row - focal_row)
end
table.sort(order, function(x, y)
  local dx, dy = row_distance(x), row_distance(y)
  return dx < dy or (dx == dy and x < y)
end)

local best -- {tier, strands, distance, row, first number, seat ids, lease keys}
local function better(tier, left, d, row, first)
  if best == nil or tier ~= best[1] then
    return best == nil or tier < best[1]
  elseif left ~= best[2] then
    return left < best[2]
  elseif d ~= best[3] then
    return d < best[3]
  elseif row ~= best[4] then
    return row < best[4]
  end
  return first < best[5]
end

for k = 1, rows do
  local row = order[k]
  if best and best[1] == 0 and best[2] == 0 and row_distance(row) > best[3] then
    break
  end
  local ids, nums, types = row_seats(redis.call('HGET', rows_key, 'r' .. row))
  local busy = busy_seats(ids, now)
  local key = LEASE0 + tonumber(ARGV[11 + row]) -- the lease of the row's last candidate so far
  local leases, run = {}, 0 -- run: admitted free seats of one type, consecutive, ending at j
  for j = 1, #ids do
    local ok = types[j] == wanted or (wanted == '' and types[j] ~= 'wheelchair')
    if ok then
      key = key + 1
      leases[j] = KEYS[key]
    end
    ok = ok and not busy[j]
    if ok and run > 0 and nums[j] == nums[j - 1] + 1 and types[j] == types[j - 1] then
      run = run + 1
    else
      run = ok and 1 or 0
    end
    if run >= count then
      local a = j - count + 1
      local dr, dc = 6 * row - focal_row, 3 * (nums[a] + nums[j]) - focal_col
      local tier = (wanted == '' and types[j] ~= 'standard') and 1 or 0
      local d = dr * dr + dc * dc
      -- The strands only when the block may still win: most blocks of a room lose on distance.
      local open = best == nil or tier < best[1] or (tier == best[1] and (best[2] > 0 or
        d <= best[3]))
      local left = open and strands(nums, busy, a, j) or 0
      if open and not (rule and left > 0) and better(tier, left, d, row, nums[a]) then
        local seats, block_leases = {}, {}
        for i = a, j do
          seats[#seats + 1], block_leases[#block_leases + 1] = ids[i], leases[i]
        end
        best = {tier, left, d, row, nums[a], seats, block_leases}
      end
    end
  end
end
if best == nil then
  return {NO_BLOCK, count}
end

-- Everything checked; from here on only writes.
local exp = math.min(now + tonumber(ARGV[4]), tonumber(meta[2]))
local lease, seats = me .. ':' .. ARGV[6], best[6]
write_holds(seats, best[7], {user = user, exp = exp, first = now, pin = 0, lease = lease}, now)
local reply = {OK, publish(now, changes_of(seats, 'reserved', me, exp))}
for j = 1, count do
  reply[3 * j], reply[3 * j + 1], reply[3 * j + 2] = tonumber(seats[j]), exp, lease
end
return reply
