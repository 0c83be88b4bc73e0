-- Discovery: cast members, favorite cinemas and movie search. (search_history is 0005's.)
--
-- Search is full-text first (a weighted tsvector: title A, director and cast B, genre C,
-- description D, behind a GIN index) and typo-tolerant second (pg_trgm word similarity on
-- lower(title), behind a GIN trigram index), so neither path reads every row.
--
-- pg_trgm is optional: a PostgreSQL built without it (the pgserver package's, the embedded
-- fallback) gets no trigram indexes here and 0009 supplies word_similarity and %> in SQL, with
-- the same results from a scan of movies. Databases that ran this file with pg_trgm keep it.

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'pg_trgm') THEN
        CREATE EXTENSION IF NOT EXISTS pg_trgm;
    END IF;
END
$$;

CREATE TABLE cast_members (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    movie_id       bigint      NOT NULL REFERENCES movies (id) ON DELETE CASCADE,
    name           text        NOT NULL,
    role           text        NOT NULL DEFAULT 'actor' CHECK (role IN ('actor', 'director',
                   'writer', 'producer', 'composer', 'cinematographer', 'editor', 'other')),
    character_name text,
    billing_order  integer     NOT NULL DEFAULT 0 CHECK (billing_order >= 0),
    photo_url      text,
    bio            text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX cast_members_movie_idx ON cast_members (movie_id, billing_order, id);

CREATE TABLE favorite_cinemas (
    user_id    bigint      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    cinema_id  bigint      NOT NULL REFERENCES cinemas (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, cinema_id)
);
CREATE INDEX favorite_cinemas_cinema_idx ON favorite_cinemas (cinema_id);

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm') THEN
        CREATE INDEX cinemas_name_trgm_idx ON cinemas USING gin (lower(name) gin_trgm_ops);
    END IF;
END
$$;
CREATE INDEX cinemas_city_idx ON cinemas (lower(city));
CREATE INDEX screenings_room_starts_idx ON screenings (room_id, starts_at);

-- The movie's search document. Cast names live in another table, so a generated column cannot
-- hold them: triggers on both tables keep movies.search_vector current.
CREATE FUNCTION movie_search_document(
    p_movie_id bigint, p_title text, p_director text, p_genre text, p_description text
) RETURNS tsvector LANGUAGE sql STABLE AS $$
    SELECT setweight(to_tsvector('english', coalesce(p_title, '')), 'A')
        || setweight(to_tsvector('english', coalesce(p_director, '') || ' ' || coalesce(
               (SELECT string_agg(c.name, ' ') FROM cast_members c WHERE c.movie_id = p_movie_id),
               '')), 'B')
        || setweight(to_tsvector('english', coalesce(p_genre, '')), 'C')
        || setweight(to_tsvector('english', coalesce(p_description, '')), 'D')
$$;

ALTER TABLE movies ADD COLUMN search_vector tsvector NOT NULL DEFAULT ''::tsvector;

CREATE FUNCTION movies_search_vector_trigger() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.search_vector := movie_search_document(
        NEW.id, NEW.title, NEW.director, NEW.genre, NEW.description);
    RETURN NEW;
END
$$;

CREATE TRIGGER movies_search_vector
    BEFORE INSERT OR UPDATE OF title, director, genre, description ON movies
    FOR EACH ROW EXECUTE FUNCTION movies_search_vector_trigger();

CREATE FUNCTION refresh_movie_search(p_movie_id bigint) RETURNS void LANGUAGE sql AS $$
    UPDATE movies m
       SET search_vector = movie_search_document(m.id, m.title, m.director, m.genre, m.description)
     WHERE m.id = p_movie_id
$$;

CREATE FUNCTION cast_members_search_trigger() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM refresh_movie_search(NEW.movie_id);
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM refresh_movie_search(OLD.movie_id);
    ELSE
        PERFORM refresh_movie_search(OLD.movie_id);
        IF NEW.movie_id <> OLD.movie_id THEN
            PERFORM refresh_movie_search(NEW.movie_id);
        END IF;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER cast_members_search
    AFTER INSERT OR DELETE OR UPDATE OF name, movie_id ON cast_members
    FOR EACH ROW EXECUTE FUNCTION cast_members_search_trigger();

UPDATE movies SET search_vector = movie_search_document(id, title, director, genre, description);

-- fastupdate off: catalog writes are rare, and a search must never wade through a GIN pending
-- list (after a bulk load it makes the planner fall back to reading every row).
CREATE INDEX movies_search_idx ON movies USING gin (search_vector) WITH (fastupdate = off);
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm') THEN
        CREATE INDEX movies_title_trgm_idx ON movies USING gin (lower(title) gin_trgm_ops)
            WITH (fastupdate = off);
    END IF;
END
$$;
CREATE INDEX movies_rating_idx ON movies (rating DESC NULLS LAST, id);

-- 'Drama, Crime' -> {drama,crime}: how genre filters and recommendations read movies.genre.
CREATE FUNCTION movie_genres(p_genre text) RETURNS text[] LANGUAGE sql IMMUTABLE AS $$
    SELECT array_remove(regexp_split_to_array(lower(trim(p_genre)), '\s*[,/|]\s*'), '')
$$;
CREATE INDEX movies_genres_idx ON movies USING gin (movie_genres(genre)) WITH (fastupdate = off);
