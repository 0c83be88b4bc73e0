-- Typo-tolerant title search without pg_trgm (db/discovery.py uses word_similarity() and %>).
--
-- seatlock_word_similarity() is pg_trgm's word_similarity() in PL/pgSQL, step for step
-- (contrib/pg_trgm/trgm_op.c: generate_trgm_only, calc_word_similarity, iterate_word_similarity),
-- so both give the same real number for the same strings; tests/db/test_trigram_fallback.py
-- compares them where pg_trgm exists. It is created everywhere (that comparison needs it); only a
-- database without pg_trgm also gets word_similarity(text, text) and the operator %> under
-- pg_trgm's names. There the search reads every title (no trigram index): fine for a catalog of
-- thousands of films, and the embedded PostgreSQL is a development default.
--
-- To move such a database to pg_trgm later: DROP OPERATOR %> (text, text); DROP FUNCTION
-- word_similarity(text, text), seatlock_word_similarity_commutator_op(text, text); then
-- CREATE EXTENSION pg_trgm and the two trigram indexes of 0004.

-- pg_trgm's trigrams of a string, in order and with repeats (generate_trgm_only): every run of
-- alphanumerics is a word, lower-cased, padded with two spaces before and one after; each three
-- consecutive characters of a padded word are a trigram. Plain loops over simple expressions:
-- no query runs per call, since the search calls this for every title.
CREATE FUNCTION seatlock_trigrams(p_text text) RETURNS text[]
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
    result text[] := '{}';
    n      int := 0;
    word   text;
    padded text;
BEGIN
    FOREACH word IN ARRAY regexp_split_to_array(p_text, '[^[:alnum:]]+') LOOP
        CONTINUE WHEN word = '';
        padded := '  ' || lower(word) || ' ';
        FOR i IN 1 .. length(padded) - 2 LOOP
            n := n + 1;
            result[n] := substr(padded, i, 3);
        END LOOP;
    END LOOP;
    RETURN result;
END
$$;

-- The greatest similarity between the query's trigram set and a continuous extent of the text's
-- trigrams, found by pg_trgm's greedy scan (iterate_word_similarity without flags). Positions are
-- 0-based as in the C code; the similarity is computed in real (float4), as CALCSML does.
CREATE FUNCTION seatlock_word_similarity(p_query text, p_text text) RETURNS real
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
    trg1       text[] := seatlock_trigrams(p_query);
    trg2       text[] := seatlock_trigrams(p_text);
    len2       int := cardinality(trg2);
    ulen1      int := 0;
    wanted     text[] := '{}';     -- the query's trigram set
    distinct2  text[] := '{}';     -- the text's trigram set, numbered in order of appearance
    ids        int[] := '{}';      -- per trigram of the text: its number in distinct2
    found      boolean[] := '{}';  -- per number: is that trigram one of the query's?
    lastpos    int[] := '{}';      -- per number: its last position in the current extent
    lower_pos  int := -1;
    upper_pos  int := -1;
    ulen2      int := 0;
    cnt        int := 0;
    prev_lower int;
    tmp_ulen2  int;
    tmp_count  int;
    t          int;
    smlr_cur   real;
    smlr_tmp   real;
    smlr_max   real := 0;
    t_text     text;
BEGIN
    IF NOT trg2 && trg1 THEN
        RETURN 0;  -- no trigram in common (this is most titles)
    END IF;
    FOREACH t_text IN ARRAY trg1 LOOP
        IF NOT t_text = ANY (wanted) THEN
            ulen1 := ulen1 + 1;
            wanted[ulen1] := t_text;
        END IF;
    END LOOP;
    FOR i IN 1 .. len2 LOOP
        t := array_position(distinct2, trg2[i]);
        IF t IS NULL THEN
            t := cardinality(distinct2) + 1;
            distinct2[t] := trg2[i];
            found[t] := trg2[i] = ANY (wanted);
            lastpos[t] := -1;
        END IF;
        ids[i] := t;
    END LOOP;
    FOR i IN 0 .. len2 - 1 LOOP
        t := ids[i + 1];
        IF lower_pos >= 0 OR found[t] THEN
            IF lastpos[t] < 0 THEN
                ulen2 := ulen2 + 1;
                IF found[t] THEN
                    cnt := cnt + 1;
                END IF;
            END IF;
            lastpos[t] := i;
        END IF;
        IF found[t] THEN
            upper_pos := i;
            IF lower_pos = -1 THEN
                lower_pos := i;
                ulen2 := 1;
            END IF;
            smlr_cur := cnt::real / (ulen1 + ulen2 - cnt)::real;
            -- Try moving the extent's start right for a greater similarity.
            tmp_count := cnt;
            tmp_ulen2 := ulen2;
            prev_lower := lower_pos;
            FOR tmp_lower IN lower_pos .. upper_pos LOOP
                smlr_tmp := tmp_count::real / (ulen1 + tmp_ulen2 - tmp_count)::real;
                IF smlr_tmp > smlr_cur THEN
                    smlr_cur := smlr_tmp;
                    ulen2 := tmp_ulen2;
                    lower_pos := tmp_lower;
                    cnt := tmp_count;
                END IF;
                IF lastpos[ids[tmp_lower + 1]] = tmp_lower THEN
                    tmp_ulen2 := tmp_ulen2 - 1;
                    IF found[ids[tmp_lower + 1]] THEN
                        tmp_count := tmp_count - 1;
                    END IF;
                END IF;
            END LOOP;
            smlr_max := greatest(smlr_max, smlr_cur);
            FOR tmp_lower IN prev_lower .. lower_pos - 1 LOOP
                IF lastpos[ids[tmp_lower + 1]] = tmp_lower THEN
                    lastpos[ids[tmp_lower + 1]] := -1;
                END IF;
            END LOOP;
        END IF;
    END LOOP;
    RETURN smlr_max;
END
$$;

DO $do$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm') THEN
        CREATE FUNCTION word_similarity(text, text) RETURNS real
            LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
            AS 'SELECT seatlock_word_similarity($1, $2)';
        -- text %> query: word_similarity(query, text) >= pg_trgm.word_similarity_threshold,
        -- whose default is pg_trgm's 0.6f (a float4 constant widened to double).
        CREATE FUNCTION seatlock_word_similarity_commutator_op(text, text) RETURNS boolean
            LANGUAGE sql STABLE STRICT PARALLEL SAFE
            AS $f$
                SELECT seatlock_word_similarity($2, $1) >= coalesce(
                    nullif(current_setting('pg_trgm.word_similarity_threshold', true), '')::float8,
                    0.6::real::float8)
            $f$;
        CREATE OPERATOR %> (
            LEFTARG = text, RIGHTARG = text, FUNCTION = seatlock_word_similarity_commutator_op
        );
    END IF;
END
$do$;
