-- Unpaid tickets behave like holds: a pending ticket keeps its seat until payment_due, and past
-- it the payment-deadline loop (seatlock/services/payments.py) cancels it and frees the seat.
-- The booking flow records payment_due right after the commit (booked_at + the setting
-- SEATLOCK_PAYMENT_SECONDS); a pending ticket without one (its process died in between, or an
-- older process booked it during a rolling upgrade) is due at booked_at + the setting.
-- Pending tickets booked before this migration get five minutes (the default hold time) from
-- now to be paid: they never had a deadline, so none has passed yet.
ALTER TABLE tickets ADD COLUMN payment_due timestamptz;
UPDATE tickets SET payment_due = now() + interval '5 minutes' WHERE status = 'pending';
-- Only pending tickets are ever due, and they are few: the loop's scan stays small.
CREATE INDEX tickets_pending_idx ON tickets (booked_at) WHERE status = 'pending';
