-- Kept figures (docs/architecture.md#kept-figures): what `status`, `metrics`, `/metrics` and the
-- status page show is kept as it changes, in the transaction that changes it, not counted from
-- the outbox, the ledger and the snapshot on every read. `engage.figure_drift` compares them
-- with a full count.

-- Per (destination, definition): outbox rows by status, and the ledger's confirmed values.
-- Statement-level triggers (below) add each statement's net change (one upsert per pair it touched,
-- none when nothing changed status: a claim, a lease renewal), so whatever writes the outbox
-- or the ledger — delivery, a run, an operator's UPDATE — keeps them exact, and a transaction
-- rolled back (kill -9) takes its change back with it.
CREATE TABLE engage.pair_figures (
    destination_id bigint NOT NULL,
    computation_id bigint NOT NULL,             -- 0: forwarded calls (no definition)
    pending        bigint NOT NULL DEFAULT 0,   -- outbox rows in each status
    delivered      bigint NOT NULL DEFAULT 0,
    failed         bigint NOT NULL DEFAULT 0,
    rejected       bigint NOT NULL DEFAULT 0,
    skipped        bigint NOT NULL DEFAULT 0,
    superseded     bigint NOT NULL DEFAULT 0,
    confirmed      bigint NOT NULL DEFAULT 0,   -- ledger rows holding a value other than false or null
    PRIMARY KEY (destination_id, computation_id)
);

-- Per run: its outbox rows by status, and its first and last 2xx (the destination page's rate).
CREATE TABLE engage.run_figures (
    run_id             bigint PRIMARY KEY,
    pending            bigint NOT NULL DEFAULT 0,
    delivered          bigint NOT NULL DEFAULT 0,
    failed             bigint NOT NULL DEFAULT 0,
    rejected           bigint NOT NULL DEFAULT 0,
    skipped            bigint NOT NULL DEFAULT 0,
    superseded         bigint NOT NULL DEFAULT 0,
    first_delivered_at timestamptz,
    last_delivered_at  timestamptz
);

-- `rows`: the statement's rows with n = +1 as they are now and -1 as they were. Pairs, then
-- runs, are upserted in key order, so two transactions never wait for each other's rows in
-- opposite orders.
CREATE FUNCTION engage.count_outbox_rows() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    columns text := 'destination_id, computation_id, run_id, status, delivered_at';
    rows text := CASE TG_OP
        WHEN 'INSERT' THEN format('SELECT %s, 1 AS n FROM new_rows', columns)
        WHEN 'DELETE' THEN format('SELECT %s, -1 AS n FROM old_rows', columns)
        ELSE format('SELECT %s, 1 AS n FROM new_rows UNION ALL SELECT %s, -1 FROM old_rows', columns, columns) END;
    statuses text := $s$
        coalesce(sum(n) FILTER (WHERE status = 'pending'), 0) AS pending,
        coalesce(sum(n) FILTER (WHERE status = 'delivered'), 0) AS delivered,
        coalesce(sum(n) FILTER (WHERE status = 'failed'), 0) AS failed,
        coalesce(sum(n) FILTER (WHERE status = 'rejected'), 0) AS rejected,
        coalesce(sum(n) FILTER (WHERE status = 'skipped'), 0) AS skipped,
        coalesce(sum(n) FILTER (WHERE status = 'superseded'), 0) AS superseded$s$;
    added text := $s$
        pending = f.pending + EXCLUDED.pending, delivered = f.delivered + EXCLUDED.delivered,
        failed = f.failed + EXCLUDED.failed, rejected = f.rejected + EXCLUDED.rejected,
        skipped = f.skipped + EXCLUDED.skipped, superseded = f.superseded + EXCLUDED.superseded$s$;
BEGIN
    EXECUTE format($sql$
        INSERT INTO engage.pair_figures AS f (destination_id, computation_id, pending, delivered, failed, rejected, skipped, superseded)
        SELECT * FROM (SELECT destination_id, coalesce(computation_id, 0), %s FROM (%s) r GROUP BY 1, 2) d
        WHERE (pending, delivered, failed, rejected, skipped, superseded) <> (0, 0, 0, 0, 0, 0)
        ORDER BY 1, 2
        ON CONFLICT (destination_id, computation_id) DO UPDATE SET %s
        $sql$, statuses, rows, added);
    EXECUTE format($sql$
        INSERT INTO engage.run_figures AS f (run_id, pending, delivered, failed, rejected, skipped, superseded,
                                             first_delivered_at, last_delivered_at)
        SELECT * FROM (SELECT run_id, %s,
                              min(delivered_at) FILTER (WHERE n > 0 AND status = 'delivered'),
                              max(delivered_at) FILTER (WHERE n > 0 AND status = 'delivered')
                       FROM (%s) r WHERE run_id IS NOT NULL GROUP BY 1) d
        WHERE (pending, delivered, failed, rejected, skipped, superseded) <> (0, 0, 0, 0, 0, 0)
        ORDER BY 1
        ON CONFLICT (run_id) DO UPDATE SET %s,
            first_delivered_at = least(f.first_delivered_at, EXCLUDED.first_delivered_at),
            last_delivered_at = greatest(f.last_delivered_at, EXCLUDED.last_delivered_at)
        $sql$, statuses, rows, added);
    RETURN NULL;
END;
$$;

CREATE FUNCTION engage.count_ledger_rows() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    rows text := CASE TG_OP
        WHEN 'INSERT' THEN 'SELECT destination_id, computation_id, value, 1 AS n FROM new_rows'
        WHEN 'DELETE' THEN 'SELECT destination_id, computation_id, value, -1 AS n FROM old_rows'
        ELSE 'SELECT destination_id, computation_id, value, 1 AS n FROM new_rows
              UNION ALL SELECT destination_id, computation_id, value, -1 FROM old_rows' END;
BEGIN
    EXECUTE format($sql$
        INSERT INTO engage.pair_figures AS f (destination_id, computation_id, confirmed)
        SELECT * FROM (
            SELECT destination_id, computation_id,
                   coalesce(sum(n) FILTER (WHERE value <> 'false'::jsonb AND value <> 'null'::jsonb), 0) AS confirmed
            FROM (%s) r GROUP BY 1, 2) d
        WHERE confirmed <> 0
        ORDER BY 1, 2
        ON CONFLICT (destination_id, computation_id) DO UPDATE SET confirmed = f.confirmed + EXCLUDED.confirmed
        $sql$, rows);
    RETURN NULL;
END;
$$;

-- TRUNCATE writes no transition table: it empties what it emptied.
CREATE FUNCTION engage.clear_figures() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'outbox' THEN
        UPDATE engage.pair_figures SET pending = 0, delivered = 0, failed = 0, rejected = 0, skipped = 0, superseded = 0;
        DELETE FROM engage.run_figures;
    ELSE
        UPDATE engage.pair_figures SET confirmed = 0;
    END IF;
    RETURN NULL;
END;
$$;

-- Nothing writes while the figures are counted once and the triggers start keeping them.
LOCK TABLE engage.outbox, engage.ledger, engage.backlogs IN SHARE ROW EXCLUSIVE MODE;

CREATE TRIGGER outbox_figures_insert AFTER INSERT ON engage.outbox
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION engage.count_outbox_rows();
CREATE TRIGGER outbox_figures_update AFTER UPDATE ON engage.outbox
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION engage.count_outbox_rows();
CREATE TRIGGER outbox_figures_delete AFTER DELETE ON engage.outbox
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION engage.count_outbox_rows();
CREATE TRIGGER ledger_figures_insert AFTER INSERT ON engage.ledger
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION engage.count_ledger_rows();
CREATE TRIGGER ledger_figures_update AFTER UPDATE ON engage.ledger
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION engage.count_ledger_rows();
CREATE TRIGGER ledger_figures_delete AFTER DELETE ON engage.ledger
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION engage.count_ledger_rows();

CREATE TRIGGER outbox_figures_truncate AFTER TRUNCATE ON engage.outbox
    FOR EACH STATEMENT EXECUTE FUNCTION engage.clear_figures();
CREATE TRIGGER ledger_figures_truncate AFTER TRUNCATE ON engage.ledger
    FOR EACH STATEMENT EXECUTE FUNCTION engage.clear_figures();

INSERT INTO engage.pair_figures (destination_id, computation_id, pending, delivered, failed, rejected, skipped, superseded, confirmed)
SELECT destination_id, computation_id, sum(pending), sum(delivered), sum(failed), sum(rejected), sum(skipped),
       sum(superseded), sum(confirmed)
FROM (SELECT destination_id, coalesce(computation_id, 0) AS computation_id,
             count(*) FILTER (WHERE status = 'pending') AS pending, count(*) FILTER (WHERE status = 'delivered') AS delivered,
             count(*) FILTER (WHERE status = 'failed') AS failed, count(*) FILTER (WHERE status = 'rejected') AS rejected,
             count(*) FILTER (WHERE status = 'skipped') AS skipped, count(*) FILTER (WHERE status = 'superseded') AS superseded,
             0 AS confirmed
      FROM engage.outbox GROUP BY 1, 2
      UNION ALL
      SELECT destination_id, computation_id, 0, 0, 0, 0, 0, 0,
             count(*) FILTER (WHERE value <> 'false'::jsonb AND value <> 'null'::jsonb)
      FROM engage.ledger GROUP BY 1, 2) counted
GROUP BY 1, 2;

INSERT INTO engage.run_figures (run_id, pending, delivered, failed, rejected, skipped, superseded,
                                first_delivered_at, last_delivered_at)
SELECT run_id, count(*) FILTER (WHERE status = 'pending'), count(*) FILTER (WHERE status = 'delivered'),
       count(*) FILTER (WHERE status = 'failed'), count(*) FILTER (WHERE status = 'rejected'),
       count(*) FILTER (WHERE status = 'skipped'), count(*) FILTER (WHERE status = 'superseded'),
       min(delivered_at) FILTER (WHERE status = 'delivered'), max(delivered_at) FILTER (WHERE status = 'delivered')
FROM engage.outbox WHERE run_id IS NOT NULL GROUP BY 1;

-- A backlog knows how many members it has not reached: the snapshot's rows after
-- after_profile. Set from the evaluation's member count when a full sync writes it, lowered by
-- what each expansion covers, moved by each evaluation's entries and exits past its cursor.
-- Reaching a member may find it unchanged at the destination or without a Vero id: `pending`
-- counts what is still to be looked at, and falls by more than was sent when it does.
ALTER TABLE engage.backlogs ADD COLUMN remaining bigint;
UPDATE engage.backlogs b SET remaining = (SELECT count(*) FROM engage.memberships m
                                          WHERE m.computation_id = b.computation_id
                                            AND m.profile_id > coalesce(b.after_profile, ''));
ALTER TABLE engage.backlogs ALTER COLUMN remaining SET NOT NULL;

-- The oldest pending row of a destination (its age is a gauge), from the first entry of a
-- partial index of pending rows, not a scan of them all.
CREATE INDEX outbox_pending_age_idx ON engage.outbox (destination_id, created_at) WHERE status = 'pending';

-- A pair's last successful run, by the instant it ran at (next due) and by when it finished
-- (the last-success gauge): the first entry of each index, however many runs the pair has had.
CREATE INDEX sync_runs_last_ok_idx ON engage.sync_runs (computation_id, destination_id, (coalesce(instant, started_at)) DESC)
    WHERE status IN ('succeeded', 'partial');
CREATE INDEX sync_runs_last_finished_idx ON engage.sync_runs (computation_id, destination_id, finished_at DESC)
    WHERE status IN ('succeeded', 'partial');
-- A definition's and a destination's newest runs (the status page's windows), from the first
-- entries of an index, however many runs there have been.
CREATE INDEX sync_runs_computation_idx ON engage.sync_runs (computation_id, started_at DESC, id DESC);
CREATE INDEX sync_runs_destination_idx ON engage.sync_runs (destination_id, started_at DESC, id DESC);

-- A run's newest rows (the definition page's recent changes) from the end of an index, not a
-- sort of every row of the run: a full sync's run holds a row per member it sent.
CREATE INDEX outbox_run_id_idx ON engage.outbox (run_id, id);
DROP INDEX engage.outbox_run_idx;
