-- The status page's reads, as functions: the page and an analyst in psql run the same
-- SQL (`SELECT * FROM engage.definition_runs('vip')`). Each reads through an index: a pair's runs
-- by sync_runs_pair_idx, a run's rows by outbox_run_idx, its failures by outbox_failed_idx;
-- nothing scans the outbox whole.

-- The last n runs of a definition (every destination), oldest first: the size chart and the runs.
CREATE FUNCTION engage.definition_runs(definition_key text, n integer DEFAULT 1000)
RETURNS TABLE (run_id bigint, destination text, mode text, status text, evaluation text,
               members integer, entered integer, exited integer, changed integer, skipped integer,
               started_at timestamptz, seconds double precision,
               evaluate_ms double precision, diff_ms double precision, deliver_ms double precision, error text)
LANGUAGE sql STABLE AS $$
    SELECT * FROM (
        SELECT r.id, d.name, r.mode, r.status, r.evaluation, r.members, r.entered, r.exited, r.changed, r.skipped,
               r.started_at, extract(epoch FROM r.finished_at - r.started_at)::float8,
               r.evaluate_ms, r.diff_ms, r.deliver_ms, r.error
        FROM engage.computations c
        JOIN engage.sync_runs r ON r.computation_id = c.id
        JOIN engage.destinations d ON d.id = r.destination_id
        WHERE c.key = definition_key
        ORDER BY r.started_at DESC, r.id DESC
        LIMIT n) last
    ORDER BY started_at, id
$$;

-- Changes a definition's last runs wrote (up to n from each of its last five runs, newest runs
-- first): what was entered, exited or changed, for whom, and what became of it.
CREATE FUNCTION engage.definition_changes(definition_key text, n integer DEFAULT 20)
RETURNS TABLE (run_id bigint, destination text, user_id text, op text, value jsonb, status text,
               reason text, created_at timestamptz, delivered_at timestamptz)
LANGUAGE sql STABLE AS $$
    SELECT o.run_id, d.name, coalesce(o.vero_id, o.message ->> 'userId'), o.op, o.value, o.status,
           coalesce(o.reason, o.last_error), o.created_at, o.delivered_at
    FROM engage.computations c
    CROSS JOIN LATERAL (SELECT r.id, r.destination_id, r.started_at FROM engage.sync_runs r
                        WHERE r.computation_id = c.id ORDER BY r.started_at DESC, r.id DESC LIMIT 5) r
    JOIN engage.destinations d ON d.id = r.destination_id
    CROSS JOIN LATERAL (SELECT * FROM engage.outbox o WHERE o.run_id = r.id ORDER BY o.id DESC LIMIT n) o
    WHERE c.key = definition_key
    ORDER BY r.started_at DESC, o.id DESC
    LIMIT n
$$;

-- The rows of a run that failed, were rejected or were skipped, found without reading the run's
-- other rows: the pages group them. Failures are few, so the index is small and cheap to keep.
CREATE INDEX outbox_failed_idx ON engage.outbox (run_id) WHERE status IN ('failed', 'rejected', 'skipped');

-- A definition's unresolved failures (engage.delivery_failures) among the rows of its last `runs`
-- runs, grouped by what went wrong, with the three latest users of each as examples.
CREATE FUNCTION engage.definition_failures(definition_key text, runs integer DEFAULT 50)
RETURNS TABLE (destination text, status text, reason text, status_code integer, rows bigint,
               examples text[], last_at timestamptz)
LANGUAGE sql STABLE AS $$
    SELECT f.destination, f.status, f.reason, max(f.last_status_code), count(*),
           (array_agg(coalesce(f.user_id, f.profile_id) ORDER BY f.created_at DESC))[1:3], max(f.created_at)
    FROM engage.delivery_failures f
    WHERE f.key = definition_key
      AND f.run_id = ANY (ARRAY(SELECT r.id FROM engage.computations c JOIN engage.sync_runs r ON r.computation_id = c.id
                                WHERE c.key = definition_key ORDER BY r.started_at DESC, r.id DESC LIMIT runs))
    GROUP BY f.destination, f.status, f.reason
    ORDER BY count(*) DESC, f.reason
    LIMIT 50
$$;

-- A destination's last n runs: rows written, what became of them, the delivery rate (delivered
-- rows over the time from the first 2xx to the last) and the time from a change written to
-- Vero's 2xx (median and 95th percentile).
CREATE FUNCTION engage.destination_runs(destination_name text, n integer DEFAULT 20)
RETURNS TABLE (run_id bigint, key text, mode text, status text, started_at timestamptz, rows bigint,
               delivered bigint, pending bigint, failed bigint, rejected bigint, skipped bigint,
               per_second double precision, p50_ms double precision, p95_ms double precision)
LANGUAGE sql STABLE AS $$
    SELECT r.id, c.key, r.mode, r.status, r.started_at, o.rows, o.delivered, o.pending, o.failed, o.rejected,
           o.skipped, o.per_second, o.p50_ms, o.p95_ms
    FROM engage.destinations d
    CROSS JOIN LATERAL (SELECT * FROM engage.sync_runs r WHERE r.destination_id = d.id
                        ORDER BY r.started_at DESC, r.id DESC LIMIT n) r
    LEFT JOIN engage.computations c ON c.id = r.computation_id
    CROSS JOIN LATERAL (
        SELECT count(*) AS rows,
               count(*) FILTER (WHERE o.status = 'delivered') AS delivered,
               count(*) FILTER (WHERE o.status = 'pending') AS pending,
               count(*) FILTER (WHERE o.status = 'failed') AS failed,
               count(*) FILTER (WHERE o.status = 'rejected') AS rejected,
               count(*) FILTER (WHERE o.status = 'skipped') AS skipped,
               count(*) FILTER (WHERE o.status = 'delivered')
                   / nullif(extract(epoch FROM max(o.delivered_at) - min(o.delivered_at)), 0)::float8 AS per_second,
               percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM o.delivered_at - o.created_at) * 1000)
                   FILTER (WHERE o.status = 'delivered') AS p50_ms,
               percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM o.delivered_at - o.created_at) * 1000)
                   FILTER (WHERE o.status = 'delivered') AS p95_ms
        FROM engage.outbox o WHERE o.run_id = r.id) o
    WHERE d.name = destination_name
    ORDER BY r.started_at DESC, r.id DESC
$$;

-- A destination's unresolved failures among the rows of its last `runs` runs, by HTTP status code
-- (NULL: no answer, or not sent).
CREATE FUNCTION engage.destination_failures(destination_name text, runs integer DEFAULT 50)
RETURNS TABLE (status_code integer, status text, rows bigint, reason text, last_at timestamptz)
LANGUAGE sql STABLE AS $$
    SELECT f.last_status_code, f.status, count(*), (array_agg(f.reason ORDER BY f.created_at DESC))[1], max(f.created_at)
    FROM engage.delivery_failures f
    WHERE f.destination = destination_name
      AND f.run_id = ANY (ARRAY(SELECT r.id FROM engage.destinations d JOIN engage.sync_runs r ON r.destination_id = d.id
                                WHERE d.name = destination_name ORDER BY r.started_at DESC, r.id DESC LIMIT runs))
    GROUP BY f.last_status_code, f.status
    ORDER BY count(*) DESC
$$;
