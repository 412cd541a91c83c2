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
