-- Incremental evaluation (docs/architecture.md#incremental-evaluation): a run costs what changed.

-- Change capture. Statement-level triggers append, per statement, the profiles it touched
-- (with the event name for engage.events; none for engage.profiles) as one row with parallel
-- arrays: one row per statement keeps the log's cost flat however many rows a statement
-- writes (ingest loads 10,000 lines a statement). `xid` is the writing transaction: a run
-- reads every row its last evaluation could not see (pg_visible_in_snapshot), so a change
-- committed late is read by the next run, never skipped.
CREATE TABLE engage.profile_changes (
    position    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    xid         xid8 NOT NULL DEFAULT pg_current_xact_id(),
    logged_at   timestamptz NOT NULL DEFAULT now(),
    source      text NOT NULL CHECK (source IN ('events', 'profiles')),
    profile_ids text[],          -- NULL: every profile (a TRUNCATE)
    events      text[]           -- for events: the event name of each profile id (parallel array)
);
CREATE INDEX profile_changes_xid_idx ON engage.profile_changes (xid);

CREATE FUNCTION engage.log_event_changes() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        INSERT INTO engage.profile_changes (source, profile_ids, events) VALUES ('events', NULL, NULL);
    ELSIF TG_OP = 'INSERT' THEN
        INSERT INTO engage.profile_changes (source, profile_ids, events)
        SELECT 'events', array_agg(profile_id), array_agg(event)
        FROM (SELECT DISTINCT profile_id, event FROM new_rows) t HAVING count(*) > 0;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO engage.profile_changes (source, profile_ids, events)
        SELECT 'events', array_agg(profile_id), array_agg(event)
        FROM (SELECT DISTINCT profile_id, event FROM old_rows) t HAVING count(*) > 0;
    ELSE -- UPDATE: the rows as they were and as they are (an event can move or be renamed)
        INSERT INTO engage.profile_changes (source, profile_ids, events)
        SELECT 'events', array_agg(profile_id), array_agg(event)
        FROM (SELECT profile_id, event FROM old_rows UNION SELECT profile_id, event FROM new_rows) t HAVING count(*) > 0;
    END IF;
    RETURN NULL;
END;
$$;

CREATE FUNCTION engage.log_profile_changes() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        INSERT INTO engage.profile_changes (source, profile_ids) VALUES ('profiles', NULL);
    ELSIF TG_OP = 'INSERT' THEN
        INSERT INTO engage.profile_changes (source, profile_ids)
        SELECT 'profiles', array_agg(profile_id) FROM new_rows HAVING count(*) > 0;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO engage.profile_changes (source, profile_ids)
        SELECT 'profiles', array_agg(profile_id) FROM old_rows HAVING count(*) > 0;
    ELSE
        INSERT INTO engage.profile_changes (source, profile_ids)
        SELECT 'profiles', array_agg(profile_id)
        FROM (SELECT profile_id FROM old_rows UNION SELECT profile_id FROM new_rows) t HAVING count(*) > 0;
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER events_changes_insert AFTER INSERT ON engage.events
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION engage.log_event_changes();
CREATE TRIGGER events_changes_update AFTER UPDATE ON engage.events
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION engage.log_event_changes();
CREATE TRIGGER events_changes_delete AFTER DELETE ON engage.events
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION engage.log_event_changes();
CREATE TRIGGER events_changes_truncate AFTER TRUNCATE ON engage.events
    FOR EACH STATEMENT EXECUTE FUNCTION engage.log_event_changes();
CREATE TRIGGER profiles_changes_insert AFTER INSERT ON engage.profiles
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION engage.log_profile_changes();
CREATE TRIGGER profiles_changes_update AFTER UPDATE ON engage.profiles
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION engage.log_profile_changes();
CREATE TRIGGER profiles_changes_delete AFTER DELETE ON engage.profiles
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION engage.log_profile_changes();
CREATE TRIGGER profiles_changes_truncate AFTER TRUNCATE ON engage.profiles
    FOR EACH STATEMENT EXECUTE FUNCTION engage.log_profile_changes();

-- The last evaluation of each definition: the instant it evaluated at (T0), what it saw of
-- the log (the transaction snapshot taken before reading it), the definition it evaluated
-- (another one means a full evaluation), and when it last evaluated in full.
CREATE TABLE engage.evaluations (
    computation_id bigint PRIMARY KEY REFERENCES engage.computations,
    evaluated_at   timestamptz NOT NULL,
    seen           pg_snapshot NOT NULL,
    definition     jsonb NOT NULL,
    full_at        timestamptz NOT NULL
);

-- Every change of a snapshot row: for analysts ("when did she become VIP?") and as the feed
-- each (definition, destination) pair diffs from. value NULL: the profile left; previous_value
-- NULL: it was not in before.
CREATE TABLE engage.membership_history (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    computation_id bigint NOT NULL,
    profile_id     text NOT NULL,
    value          jsonb,
    previous_value jsonb,
    changed_at     timestamptz NOT NULL,
    run_id         bigint
);
-- A pair's diff reads the changes after its watermark: (computation, id).
CREATE INDEX membership_history_computation_idx ON engage.membership_history (computation_id, id);

-- How far each pair's diff has read: the history up to `history_id`, the profile changes its
-- snapshot `seen` could see (identity changes: a new user id, a deleted profile).
CREATE TABLE engage.pair_watermarks (
    destination_id bigint NOT NULL REFERENCES engage.destinations,
    computation_id bigint NOT NULL REFERENCES engage.computations,
    history_id     bigint NOT NULL,
    seen           pg_snapshot NOT NULL,
    PRIMARY KEY (destination_id, computation_id)
);

-- A pair's incremental diff finds the Vero ids its changed profiles held by profile.
CREATE INDEX ledger_profile_idx ON engage.ledger (destination_id, computation_id, profile_id);

ALTER TABLE engage.computations ADD COLUMN reconcile_every interval NOT NULL DEFAULT '24 hours';

ALTER TABLE engage.sync_runs
    ADD COLUMN evaluation text CHECK (evaluation IN ('full', 'incremental')),
    ADD COLUMN affected integer,   -- profiles evaluated (all of them in a full evaluation)
    ADD COLUMN drift integer;      -- a reconciling run: profiles the incremental snapshot had wrong
