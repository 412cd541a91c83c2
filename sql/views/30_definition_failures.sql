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
