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
