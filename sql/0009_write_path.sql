-- The write path of a full sync: a first sync or a resync writes the snapshot, its
-- history and one backlog row per (definition, destination) — not one outbox row per member.
-- Delivery turns the backlog into outbox rows a batch at a time, in profile order, as it sends
-- (DiffEngine.expand). A definition's outbox row stores what varies per change (Vero id,
-- email, value, which call); the Segment call is built from it and the run when the row is
-- claimed (AudienceCall). Measured: see docs/performance.md.

-- Rows of definitions: no stored call (`message` stays for forwarded calls and older rows).
ALTER TABLE engage.outbox
    ALTER COLUMN message DROP NOT NULL,
    ADD COLUMN call text CHECK (call IN ('identify', 'track'));
-- The run's instant (ENGAGE_SYNC_NOW or the clock): its calls' timestamp.
ALTER TABLE engage.sync_runs ADD COLUMN instant timestamptz;

-- The members of a full sync or resync still to be enqueued: those of the definition's snapshot
-- after `after_profile` (all of them while it is NULL). Incremental runs leave those members to
-- the backlog, which reads their value when it reaches them.
CREATE TABLE engage.backlogs (
    destination_id bigint NOT NULL REFERENCES engage.destinations,
    computation_id bigint NOT NULL REFERENCES engage.computations,
    run_id         bigint NOT NULL REFERENCES engage.sync_runs,
    resync         boolean NOT NULL,       -- send members even when the destination holds their value
    after_profile  text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (destination_id, computation_id)
);

-- The history is read by id, after each pair's watermark: the newest rows. A block-range index
-- answers that for a few bytes per 128 pages, where a b-tree wrote an entry per change.
-- Nothing refers to a history row by its id, which the identity already makes unique: the
-- primary key's b-tree went too (measured at 200,000 changes: 176 → 130 bytes of WAL each).
DROP INDEX engage.membership_history_computation_idx;
ALTER TABLE engage.membership_history DROP CONSTRAINT membership_history_pkey;
CREATE INDEX membership_history_id_brin ON engage.membership_history USING brin (id);

-- The changelog also shows the members a backlog has still to enqueue, as pending (or skipped,
-- without a Vero id), so an analyst sees a full sync's work before delivery reaches it.
CREATE OR REPLACE VIEW engage.sync_changelog AS
SELECT o.run_id, c.key, d.name AS destination, o.profile_id,
       coalesce(o.vero_id, o.message ->> 'userId') AS user_id,
       o.op, o.value, o.status, o.reason, o.attempts, o.last_status_code, o.last_error,
       o.created_at, o.delivered_at, o.id AS outbox_id
FROM engage.outbox o
JOIN engage.destinations d ON d.id = o.destination_id
LEFT JOIN engage.computations c ON c.id = o.computation_id
UNION ALL
SELECT b.run_id, c.key, d.name, m.profile_id, w.vero_id,
       CASE WHEN c.type = 'trait' THEN 'change' ELSE 'enter' END, m.value,
       CASE WHEN w.vero_id IS NULL THEN 'skipped' ELSE 'pending' END,
       CASE WHEN w.vero_id IS NULL THEN 'missing_user_id' END,
       0, NULL, NULL, b.created_at, NULL, NULL
FROM engage.backlogs b
JOIN engage.destinations d ON d.id = b.destination_id
JOIN engage.computations c ON c.id = b.computation_id
JOIN engage.memberships m ON m.computation_id = b.computation_id AND m.profile_id > coalesce(b.after_profile, '')
JOIN engage.profiles p ON p.profile_id = m.profile_id
CROSS JOIN LATERAL (SELECT coalesce(p.user_id, CASE WHEN d.allow_email_id THEN p.email END) AS vero_id) w
LEFT JOIN engage.ledger l ON l.destination_id = b.destination_id AND l.computation_id = b.computation_id
                         AND l.vero_id = w.vero_id
WHERE b.resync OR l.value IS DISTINCT FROM m.value;

-- Outbox indexes, each for the queries it serves: the primary key (recording results), claim
-- (due pending rows), open (a pair's pending, skipped and failed rows: enqueue, supersede, the
-- views' counts) and run (a run's outcome). The (computation, status) index served only the
-- views' counts, which the open index answers per destination: every delivered row wrote it
-- three times (insert, claim, result).
DROP INDEX engage.outbox_computation_status_idx;
CREATE OR REPLACE VIEW engage.audience_sizes AS
SELECT c.key, c.type,
       (SELECT count(*) FROM engage.memberships m WHERE m.computation_id = c.id) AS members,
       (SELECT count(*) FROM engage.ledger l
        WHERE l.computation_id = c.id AND l.value <> 'false'::jsonb AND l.value <> 'null'::jsonb) AS delivered_true,
       (SELECT count(*) FROM engage.destinations d JOIN engage.outbox o ON o.destination_id = d.id
        WHERE o.computation_id = c.id AND o.status = 'pending') AS pending,
       (SELECT count(*) FROM engage.destinations d JOIN engage.outbox o ON o.destination_id = d.id
        WHERE o.computation_id = c.id AND o.status = 'failed') AS failed,
       (SELECT max(r.started_at) FROM engage.sync_runs r WHERE r.computation_id = c.id) AS last_run_at
FROM engage.computations c
WHERE c.removed_at IS NULL;
