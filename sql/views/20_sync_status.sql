-- One row per (definition, destination) pair: what `engage-sync status` prints, from kept
-- figures (engage.pair_figures, the backlog's remaining count, the evaluation's member count)
-- and the pair's newest runs, so it answers as fast at a billion rows as at ten. next_due is
-- engage.pair_schedule's, as `run` judges it (now, for a pair that never ran; NULL when the
-- definition is disabled); pending is engage.pair_waiting's (with the members a backlog has not
-- reached yet, backlog); destination_paused_at is set while the destination is paused.
CREATE VIEW engage.sync_status AS
SELECT c.key, d.name AS destination, c.type, c.enabled,
       coalesce(e.members, 0) AS members,
       coalesce(f.confirmed, 0) AS delivered_true,
       coalesce(w.waiting, 0) AS pending,
       coalesce(f.failed, 0) AS failed,
       last_run.started_at AS last_run_at, last_run.status AS last_run_status,
       CASE WHEN c.enabled THEN coalesce(s.next_due, now()) END AS next_due,
       d.paused_at AS destination_paused_at,
       coalesce(f.skipped, 0) AS skipped,
       coalesce(w.backlog, 0) AS backlog
FROM engage.computations c
CROSS JOIN engage.destinations d
LEFT JOIN engage.evaluations e ON e.computation_id = c.id
LEFT JOIN engage.pair_figures f ON f.destination_id = d.id AND f.computation_id = c.id
LEFT JOIN engage.pair_waiting w ON w.destination_id = d.id AND w.computation_id = c.id
LEFT JOIN LATERAL (SELECT r.started_at, r.status FROM engage.sync_runs r
                   WHERE r.computation_id = c.id AND r.destination_id = d.id
                   ORDER BY r.started_at DESC, r.id DESC LIMIT 1) last_run ON true
JOIN engage.pair_schedule s ON s.computation_id = c.id AND s.destination_id = d.id
WHERE c.removed_at IS NULL AND d.enabled AND (c.destinations IS NULL OR d.name = ANY (c.destinations));
