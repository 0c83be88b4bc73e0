-- The single-gap rule per screening: true refuses a hold that would leave one free seat stranded
-- between unavailable seats or at a row's end (lua/hold.lua, lua/hold_best.lua), false allows it,
-- NULL (the default, and every screening before this column) follows the server's setting
-- SEATLOCK_NO_SINGLE_GAPS. The seat engine loads the effective rule into Redis with the screening.
ALTER TABLE screenings ADD COLUMN no_single_gaps boolean;
