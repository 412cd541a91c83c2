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

-- Outbox indexes, each for the queries it serves: the primary key (recording results), claim
-- (due pending rows), open (a pair's pending, skipped and failed rows: enqueue, supersede, the
-- views' counts) and run (a run's outcome). The (computation, status) index served only the
-- views' counts, which the open index answers per destination: every delivered row wrote it
-- three times (insert, claim, result).
DROP INDEX engage.outbox_computation_status_idx;
