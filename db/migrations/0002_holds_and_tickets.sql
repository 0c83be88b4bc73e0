-- Hold history and tickets. Redis holds the live seat state; PostgreSQL is the system of record
-- for everything sold, and the final judge: one active ticket per (screening, seat), one booking
-- per payment_id.

-- Every hold ever taken, for my-reservations (include_expired) after Redis has forgotten it.
-- "expired" is derived on read: status 'active' with expires_at in the past.
CREATE TABLE reservations (
    id           bigint      PRIMARY KEY,
    screening_id bigint      NOT NULL REFERENCES screenings (id) ON DELETE CASCADE,
    seat_id      bigint      NOT NULL REFERENCES seats (id) ON DELETE CASCADE,
    user_id      bigint      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    reserved_at  timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL,
    status       text        NOT NULL DEFAULT 'active'
                 CHECK (status IN ('active', 'cancelled', 'booked', 'expired')),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX reservations_user_idx ON reservations (user_id, reserved_at DESC);
CREATE INDEX reservations_active_idx ON reservations (screening_id, seat_id) WHERE status = 'active';
-- Ids are handed out in blocks, so a process takes one round trip per thousand holds.
CREATE SEQUENCE reservations_id_seq INCREMENT BY 1000 START WITH 1000 OWNED BY reservations.id;

-- One purchase: the seats bought together, and the payment that paid for them.
CREATE TABLE bookings (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id      bigint      NOT NULL REFERENCES users (id) ON DELETE RESTRICT,
    screening_id bigint      NOT NULL REFERENCES screenings (id) ON DELETE RESTRICT,
    payment_id   text        UNIQUE,
    seat_ids     bigint[]    NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE tickets (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    booking_id   bigint        NOT NULL REFERENCES bookings (id) ON DELETE RESTRICT,
    user_id      bigint        NOT NULL REFERENCES users (id) ON DELETE RESTRICT,
    screening_id bigint        NOT NULL REFERENCES screenings (id) ON DELETE RESTRICT,
    seat_id      bigint        NOT NULL REFERENCES seats (id) ON DELETE RESTRICT,
    price        numeric(10, 2) NOT NULL CHECK (price >= 0),
    status       text          NOT NULL
                 CHECK (status IN ('pending', 'confirmed', 'cancelled', 'refunded')),
    payment_id   text,
    booked_at    timestamptz   NOT NULL DEFAULT now(),
    confirmed_at timestamptz,
    cancelled_at timestamptz
);
-- Invariant 1 and 5: a seat of a screening is sold at most once, whatever Redis says.
CREATE UNIQUE INDEX tickets_one_active_per_seat ON tickets (screening_id, seat_id)
    WHERE status IN ('pending', 'confirmed');
CREATE INDEX tickets_user_idx ON tickets (user_id, booked_at DESC);
CREATE INDEX tickets_booked_at_idx ON tickets (booked_at);
CREATE INDEX tickets_booking_idx ON tickets (booking_id);
