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
