-- Views for analysts (docs/analysts.md): plain SQL over the sync tables.

CREATE INDEX outbox_computation_status_idx ON engage.outbox (computation_id, status);

-- The current snapshot: who is in each audience, and each profile's trait values.
CREATE VIEW engage.audience_members AS
SELECT c.key, m.profile_id, p.user_id, p.email, m.value, m.since
FROM engage.memberships m
JOIN engage.computations c ON c.id = m.computation_id
LEFT JOIN engage.profiles p ON p.profile_id = m.profile_id
WHERE c.removed_at IS NULL;

-- Every change a run decided, and its fate.
CREATE VIEW engage.sync_changelog AS
SELECT o.run_id, c.key, d.name AS destination, o.profile_id,
       coalesce(p.user_id, o.message ->> 'userId') AS user_id,
       o.op, o.value, o.status, o.reason, o.attempts, o.last_status_code, o.last_error,
       o.created_at, o.delivered_at, o.id AS outbox_id
FROM engage.outbox o
JOIN engage.destinations d ON d.id = o.destination_id
LEFT JOIN engage.computations c ON c.id = o.computation_id
LEFT JOIN engage.profiles p ON p.profile_id = o.profile_id;

-- Failed (Vero said no, or attempts ran out), rejected (the mapper refused the call) and
-- skipped (no user id) rows, with the reason.
CREATE VIEW engage.delivery_failures AS
SELECT run_id, key, destination, profile_id, user_id, op, value, status,
       coalesce(reason, last_error) AS reason, attempts, last_status_code, last_error, created_at
FROM engage.sync_changelog
WHERE status IN ('failed', 'rejected', 'skipped');

-- One row per definition: current members, how many a destination confirmed, what is waiting.
CREATE VIEW engage.audience_sizes AS
SELECT c.key, c.type,
       (SELECT count(*) FROM engage.memberships m WHERE m.computation_id = c.id) AS members,
       (SELECT count(*) FROM engage.ledger l
        WHERE l.computation_id = c.id AND l.value <> 'false'::jsonb AND l.value <> 'null'::jsonb) AS delivered_true,
       (SELECT count(*) FROM engage.outbox o WHERE o.computation_id = c.id AND o.status = 'pending') AS pending,
       (SELECT count(*) FROM engage.outbox o WHERE o.computation_id = c.id AND o.status = 'failed') AS failed,
       (SELECT max(r.started_at) FROM engage.sync_runs r WHERE r.computation_id = c.id) AS last_run_at
FROM engage.computations c
WHERE c.removed_at IS NULL;

-- One row per (definition, destination) pair: what `engage-sync status` prints.
CREATE VIEW engage.sync_status AS
SELECT c.key, d.name AS destination, c.type, c.enabled,
       (SELECT count(*) FROM engage.memberships m WHERE m.computation_id = c.id) AS members,
       (SELECT count(*) FROM engage.ledger l
        WHERE l.computation_id = c.id AND l.destination_id = d.id
          AND l.value <> 'false'::jsonb AND l.value <> 'null'::jsonb) AS delivered_true,
       (SELECT count(*) FROM engage.outbox o
        WHERE o.computation_id = c.id AND o.destination_id = d.id AND o.status = 'pending') AS pending,
       (SELECT count(*) FROM engage.outbox o
        WHERE o.computation_id = c.id AND o.destination_id = d.id AND o.status = 'failed') AS failed,
       last_run.started_at AS last_run_at, last_run.status AS last_run_status,
       CASE WHEN c.enabled THEN coalesce(last_ok.started_at + c.sync_every, now()) END AS next_due
FROM engage.computations c
CROSS JOIN engage.destinations d
LEFT JOIN LATERAL (SELECT r.started_at, r.status FROM engage.sync_runs r
                   WHERE r.computation_id = c.id AND r.destination_id = d.id
                   ORDER BY r.started_at DESC, r.id DESC LIMIT 1) last_run ON true
LEFT JOIN LATERAL (SELECT max(r.started_at) AS started_at FROM engage.sync_runs r
                   WHERE r.computation_id = c.id AND r.destination_id = d.id
                     AND r.status IN ('succeeded', 'partial')) last_ok ON true
WHERE c.removed_at IS NULL AND d.enabled AND (c.destinations IS NULL OR d.name = ANY (c.destinations));
