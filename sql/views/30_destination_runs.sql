-- A destination's last n runs: rows written and what became of them (kept: engage.run_figures),
-- the delivery rate (delivered rows over the time from the first 2xx to the last) and the time
-- from a change written to Vero's 2xx (median and 95th percentile, over the run's newest 10,000
-- delivered rows, read from the end of its (run_id, id) index: a full sync's run can hold millions).
CREATE FUNCTION engage.destination_runs(destination_name text, n integer DEFAULT 20)
RETURNS TABLE (run_id bigint, key text, mode text, status text, started_at timestamptz, rows bigint,
               delivered bigint, pending bigint, failed bigint, rejected bigint, skipped bigint,
               per_second double precision, p50_ms double precision, p95_ms double precision)
LANGUAGE sql STABLE AS $$
    SELECT r.id, c.key, r.mode, r.status, r.started_at,
           coalesce(f.pending + f.delivered + f.failed + f.rejected + f.skipped + f.superseded, 0),
           coalesce(f.delivered, 0), coalesce(f.pending, 0), coalesce(f.failed, 0), coalesce(f.rejected, 0),
           coalesce(f.skipped, 0),
           f.delivered / nullif(extract(epoch FROM f.last_delivered_at - f.first_delivered_at), 0)::float8,
           l.p50_ms, l.p95_ms
    FROM engage.destinations d
    CROSS JOIN LATERAL (SELECT * FROM engage.sync_runs r WHERE r.destination_id = d.id
                        ORDER BY r.started_at DESC, r.id DESC LIMIT n) r
    LEFT JOIN engage.computations c ON c.id = r.computation_id
    LEFT JOIN engage.run_figures f ON f.run_id = r.id
    CROSS JOIN LATERAL (
        SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) AS p50_ms,
               percentile_cont(0.95) WITHIN GROUP (ORDER BY ms) AS p95_ms
        FROM (SELECT extract(epoch FROM o.delivered_at - o.created_at) * 1000 AS ms FROM engage.outbox o
              -- A range, not run_id = r.id: with an equality the planner drops run_id from the order
              -- and may walk the primary key backwards through every later run's rows instead.
              WHERE o.run_id >= r.id AND o.run_id < r.id + 1 AND o.status = 'delivered'
              ORDER BY o.run_id DESC, o.id DESC LIMIT 10000) sample) l
    WHERE d.name = destination_name
    ORDER BY r.started_at DESC, r.id DESC
$$;
