-- Search history, movie reviews and reactions to reviews.

-- The search helper's migration may have created this table already; both create exactly this
-- shape, so either order works.
CREATE TABLE IF NOT EXISTS search_history (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id     bigint      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    query       text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS search_history_user_idx
    ON search_history (user_id, created_at DESC, id DESC);

-- One review per user per movie. Reviews of an account that is later deleted stay, anonymised.
CREATE TABLE reviews (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    movie_id    bigint      NOT NULL REFERENCES movies (id) ON DELETE CASCADE,
    user_id     bigint      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    rating      smallint    NOT NULL CHECK (rating BETWEEN 1 AND 5),
    title       text        CHECK (char_length(title) BETWEEN 1 AND 200),
    content     text        NOT NULL CHECK (char_length(content) BETWEEN 1 AND 5000),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT reviews_one_per_user_movie UNIQUE (user_id, movie_id)
);
CREATE INDEX reviews_movie_idx ON reviews (movie_id, created_at DESC, id DESC);

-- One reaction per user per review; changing it updates the row, "none" deletes it.
CREATE TABLE review_reactions (
    review_id   bigint      NOT NULL REFERENCES reviews (id) ON DELETE CASCADE,
    user_id     bigint      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    reaction    text        NOT NULL CHECK (reaction IN ('like', 'dislike')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (review_id, user_id)
);
CREATE INDEX review_reactions_user_idx ON review_reactions (user_id);
