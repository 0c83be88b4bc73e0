-- The reconciler (seatlock/services/reconciler.py) leaves alone the seats of tickets cancelled
-- in the last seconds, as their cancellations are freeing them in Redis: it reads those few
-- tickets by this index on every pass, instead of every ticket of the loaded screenings.
CREATE INDEX tickets_cancelled_at_idx ON tickets (cancelled_at) WHERE cancelled_at IS NOT NULL;
