-- One row per definition: current members, how many Vero users the destinations confirmed, what
-- is waiting (engage.pair_waiting: pending includes the members a backlog has not reached yet),
-- from kept figures.
CREATE VIEW engage.audience_sizes AS
SELECT c.key, c.type,
       coalesce(e.members, 0) AS members,
       coalesce((SELECT sum(f.confirmed) FROM engage.pair_figures f WHERE f.computation_id = c.id), 0)::bigint AS delivered_true,
       coalesce((SELECT sum(w.waiting) FROM engage.pair_waiting w WHERE w.computation_id = c.id), 0)::bigint AS pending,
       coalesce((SELECT sum(f.failed) FROM engage.pair_figures f WHERE f.computation_id = c.id), 0)::bigint AS failed,
       (SELECT max(last.started_at) FROM engage.destinations d
        CROSS JOIN LATERAL (SELECT max(r.started_at) AS started_at FROM engage.sync_runs r
                            WHERE r.computation_id = c.id AND r.destination_id = d.id) last) AS last_run_at
FROM engage.computations c
LEFT JOIN engage.evaluations e ON e.computation_id = c.id
WHERE c.removed_at IS NULL;
