-- Hold history without foreign keys. Each history row's three FK checks (each locks its parent row
-- FOR KEY SHARE) cost more than the rest of its insert. The history writer now inserts only rows
-- whose screening, seat and user exist (db/reservations.py, CLOSE_AND_INSERT), and these triggers
-- keep ON DELETE CASCADE: deleting a screening, seat or user, directly or by a cascade, deletes its
-- history rows.
--
-- Race with the writer: the trigger takes the writers' lock before it deletes. Either the writer's
-- batch committed first, and the DELETE below (a new snapshot in READ COMMITTED) removes its rows
-- too, or the parent's delete holds the lock until it commits, and the batch written after it
-- sees the parent gone.

ALTER TABLE reservations
    DROP CONSTRAINT reservations_screening_id_fkey,
    DROP CONSTRAINT reservations_seat_id_fkey,
    DROP CONSTRAINT reservations_user_id_fkey;

CREATE FUNCTION reservations_of_deleted_parents() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM gone) THEN
        RETURN NULL;  -- nothing deleted (a cascade that found no rows): no wait for the writers
    END IF;
    PERFORM pg_advisory_xact_lock(1588019543);  -- WRITER_LOCK_KEY (0x5EA7_4157), db/reservations.py
    IF TG_TABLE_NAME = 'screenings' THEN
        DELETE FROM reservations WHERE screening_id IN (SELECT id FROM gone);
    ELSIF TG_TABLE_NAME = 'seats' THEN
        DELETE FROM reservations WHERE seat_id IN (SELECT id FROM gone);
    ELSIF TG_TABLE_NAME = 'users' THEN
        DELETE FROM reservations WHERE user_id IN (SELECT id FROM gone);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER screenings_delete_reservations
    AFTER DELETE ON screenings REFERENCING OLD TABLE AS gone
    FOR EACH STATEMENT EXECUTE FUNCTION reservations_of_deleted_parents();
CREATE TRIGGER seats_delete_reservations
    AFTER DELETE ON seats REFERENCING OLD TABLE AS gone
    FOR EACH STATEMENT EXECUTE FUNCTION reservations_of_deleted_parents();
CREATE TRIGGER users_delete_reservations
    AFTER DELETE ON users REFERENCING OLD TABLE AS gone
    FOR EACH STATEMENT EXECUTE FUNCTION reservations_of_deleted_parents();
