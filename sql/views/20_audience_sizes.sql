-- One row per definition: current members, how many a destination confirmed, what is waiting
-- (pending includes the members a backlog has still to enqueue, as sync_changelog lists them).
CREATE VIEW engage.audience_sizes AS
SELECT c.key, c.type,
       (SELECT count(*) FROM engage.memberships m WHERE m.computation_id = c.id) AS members,
       (SELECT count(*) FROM engage.ledger l
        WHERE l.computation_id = c.id AND l.value <> 'false'::jsonb AND l.value <> 'null'::jsonb) AS delivered_true,
       (SELECT count(*) FROM engage.destinations d JOIN engage.outbox o ON o.destination_id = d.id
        WHERE o.computation_id = c.id AND o.status = 'pending')
       + (SELECT count(*) FROM engage.sync_changelog ch
          WHERE ch.outbox_id IS NULL AND ch.status = 'pending' AND ch.key = c.key) AS pending,
       (SELECT count(*) FROM engage.destinations d JOIN engage.outbox o ON o.destination_id = d.id
        WHERE o.computation_id = c.id AND o.status = 'failed') AS failed,
       (SELECT max(r.started_at) FROM engage.sync_runs r WHERE r.computation_id = c.id) AS last_run_at
FROM engage.computations c
WHERE c.removed_at IS NULL;
