-- One row per (definition, destination) pair: what `engage-sync status` prints. A pair is next
-- due a sync_every after its last successful run's instant (the run's clock, ENGAGE_SYNC_NOW
-- included), as `run` judges it; pending includes the members a backlog has still to enqueue;
-- destination_paused_at is set while the destination is paused.
CREATE VIEW engage.sync_status AS
SELECT c.key, d.name AS destination, c.type, c.enabled,
       (SELECT count(*) FROM engage.memberships m WHERE m.computation_id = c.id) AS members,
       (SELECT count(*) FROM engage.ledger l
        WHERE l.computation_id = c.id AND l.destination_id = d.id
          AND l.value <> 'false'::jsonb AND l.value <> 'null'::jsonb) AS delivered_true,
       (SELECT count(*) FROM engage.outbox o
        WHERE o.computation_id = c.id AND o.destination_id = d.id AND o.status = 'pending')
       + (SELECT count(*) FROM engage.sync_changelog ch
          WHERE ch.outbox_id IS NULL AND ch.status = 'pending' AND ch.key = c.key AND ch.destination = d.name) AS pending,
       (SELECT count(*) FROM engage.outbox o
        WHERE o.computation_id = c.id AND o.destination_id = d.id AND o.status = 'failed') AS failed,
       last_run.started_at AS last_run_at, last_run.status AS last_run_status,
       CASE WHEN c.enabled THEN coalesce(last_ok.instant + c.sync_every, now()) END AS next_due,
       d.paused_at AS destination_paused_at
FROM engage.computations c
CROSS JOIN engage.destinations d
LEFT JOIN LATERAL (SELECT r.started_at, r.status FROM engage.sync_runs r
                   WHERE r.computation_id = c.id AND r.destination_id = d.id
                   ORDER BY r.started_at DESC, r.id DESC LIMIT 1) last_run ON true
LEFT JOIN LATERAL (SELECT max(coalesce(r.instant, r.started_at)) AS instant FROM engage.sync_runs r
                   WHERE r.computation_id = c.id AND r.destination_id = d.id
                     AND r.status IN ('succeeded', 'partial')) last_ok ON true
WHERE c.removed_at IS NULL AND d.enabled AND (c.destinations IS NULL OR d.name = ANY (c.destinations));
