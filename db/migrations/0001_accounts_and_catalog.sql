-- Accounts, sessions and the catalog it takes to sell a screening.

CREATE TABLE users (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email            text        NOT NULL,
    password_hash    text        NOT NULL,
    full_name        text        NOT NULL,
    role             text        NOT NULL DEFAULT 'user' CHECK (role IN ('user', 'admin')),
    is_active        boolean     NOT NULL DEFAULT true,
    phone            text,
    bio              text,
    profile_picture_url text,
    preferences      jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    deleted_at       timestamptz
);
CREATE UNIQUE INDEX users_email_key ON users (lower(email));

-- One row per sign-in. Access tokens name their session; revoking it stops them at once.
CREATE TABLE auth_sessions (
    id          text        PRIMARY KEY,
    user_id     bigint      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    revoked_at  timestamptz
);
CREATE INDEX auth_sessions_user_idx ON auth_sessions (user_id) WHERE revoked_at IS NULL;

-- Refresh tokens rotate; each one is used once. A used one presented again revokes its session.
CREATE TABLE refresh_tokens (
    token_hash  text        PRIMARY KEY,
    session_id  text        NOT NULL REFERENCES auth_sessions (id) ON DELETE CASCADE,
    issued_at   timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz
);
CREATE INDEX refresh_tokens_session_idx ON refresh_tokens (session_id);

CREATE TABLE password_resets (
    token_hash  text        PRIMARY KEY,
    user_id     bigint      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz
);

CREATE TABLE cinemas (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text        NOT NULL,
    address     text        NOT NULL DEFAULT '',
    city        text        NOT NULL DEFAULT '',
    phone       text,
    email       text,
    description text,
    amenities   text[]      NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE rooms (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    cinema_id   bigint      NOT NULL REFERENCES cinemas (id) ON DELETE CASCADE,
    name        text        NOT NULL,
    room_type   text        NOT NULL DEFAULT 'standard',
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (cinema_id, name)
);

CREATE TABLE seats (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    room_id     bigint      NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    row_label   text        NOT NULL,
    seat_number integer     NOT NULL CHECK (seat_number > 0),
    seat_type   text        NOT NULL DEFAULT 'standard'
                CHECK (seat_type IN ('standard', 'premium', 'vip', 'wheelchair', 'couple')),
    UNIQUE (room_id, row_label, seat_number)
);

CREATE TABLE movies (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    title            text        NOT NULL,
    description      text        NOT NULL DEFAULT '',
    duration_minutes integer     NOT NULL CHECK (duration_minutes > 0),
    genre            text        NOT NULL DEFAULT '',
    language         text        NOT NULL DEFAULT 'en',
    rating           numeric(3, 1) CHECK (rating >= 0 AND rating <= 10),
    age_rating       text,
    release_date     date,
    director         text,
    poster_url       text,
    trailer_url      text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX movies_release_date_idx ON movies (release_date);

-- A screening is a showtime: one movie in one room at one time. Two screenings in one room never
-- overlap (gist over ranges; no btree_gist needed).
CREATE TABLE screenings (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    movie_id    bigint        NOT NULL REFERENCES movies (id) ON DELETE CASCADE,
    room_id     bigint        NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    starts_at   timestamptz   NOT NULL,
    ends_at     timestamptz   NOT NULL,
    price       numeric(10, 2) NOT NULL CHECK (price >= 0),
    created_at  timestamptz   NOT NULL DEFAULT now(),
    CHECK (ends_at > starts_at),
    CONSTRAINT screenings_no_overlap EXCLUDE USING gist (
        int8range(room_id, room_id, '[]') WITH =,
        tstzrange(starts_at, ends_at) WITH &&
    )
);
CREATE INDEX screenings_movie_idx ON screenings (movie_id, starts_at);
CREATE INDEX screenings_starts_idx ON screenings (starts_at);
