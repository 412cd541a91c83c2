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
    -- A range, not run_id = r.id, so that the run's newest rows come from the end of its
    -- (run_id, id) index (engage.destination_runs says why).
    CROSS JOIN LATERAL (SELECT * FROM engage.outbox o WHERE o.run_id >= r.id AND o.run_id < r.id + 1
                        ORDER BY o.run_id DESC, o.id DESC LIMIT n) o
    WHERE c.key = definition_key
    ORDER BY r.started_at DESC, o.id DESC
    LIMIT n
$$;
