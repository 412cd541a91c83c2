-- Exits reach the Vero user who holds the value.
--
-- What a destination holds is per Vero user, not per profile: a profile can be deleted, or
-- change its user id, while Vero keeps what it was told. So every outbox row records the Vero
-- id it addresses and the email it carries, and the ledger is keyed by the Vero id it was
-- confirmed for. An exit then goes to the id that holds the value, whatever engage.profiles
-- says now (DiffEngine).

ALTER TABLE engage.outbox
    ADD COLUMN vero_id text,   -- the Vero user this row addresses (userId of the call); NULL when skipped
    ADD COLUMN email   text;   -- the email the call carries

UPDATE engage.outbox
SET vero_id = message ->> 'userId',
    email = coalesce(message #>> '{traits,email}', message #>> '{context,traits,email}');

ALTER TABLE engage.ledger
    ADD COLUMN vero_id text,
    ADD COLUMN email   text;

UPDATE engage.ledger l
SET vero_id = o.vero_id, email = o.email
FROM engage.outbox o
WHERE o.id = l.outbox_id;

-- A ledger row is written only for a delivered row, which always had a user id; and two
-- profiles could only share a Vero id through email ids: keep the later confirmation.
DELETE FROM engage.ledger WHERE vero_id IS NULL;
DELETE FROM engage.ledger l
USING engage.ledger newer
WHERE newer.destination_id = l.destination_id AND newer.computation_id = l.computation_id
  AND newer.vero_id = l.vero_id AND newer.outbox_id > l.outbox_id;

ALTER TABLE engage.ledger
    ALTER COLUMN vero_id SET NOT NULL,
    DROP CONSTRAINT ledger_pkey,
    ADD PRIMARY KEY (destination_id, computation_id, vero_id);
COMMENT ON COLUMN engage.ledger.profile_id IS 'the profile that owned vero_id when the value was confirmed';

-- Open rows are looked up by the Vero id they address (pending, failed) or, when skipped for
-- want of one, by profile: "is this value already waiting or parked?" (DiffEngine.enqueue).
DROP INDEX engage.outbox_open_idx;
CREATE INDEX outbox_open_idx ON engage.outbox (destination_id, computation_id, vero_id, profile_id)
    WHERE status IN ('pending', 'skipped', 'failed');

-- The changelog names the Vero id each row was addressed to (not the profile's id today).
CREATE OR REPLACE VIEW engage.sync_changelog AS
SELECT o.run_id, c.key, d.name AS destination, o.profile_id,
       coalesce(o.vero_id, o.message ->> 'userId') AS user_id,
       o.op, o.value, o.status, o.reason, o.attempts, o.last_status_code, o.last_error,
       o.created_at, o.delivered_at, o.id AS outbox_id
FROM engage.outbox o
JOIN engage.destinations d ON d.id = o.destination_id
LEFT JOIN engage.computations c ON c.id = o.computation_id;

-- Only what is still unresolved: a failed, rejected or skipped row is resolved by a later
-- change for the same destination, definition and Vero user that was delivered (the ledger
-- holds a later confirmation) or is pending. A row skipped for want of a Vero id is resolved
-- by the same for the id its profile has now. The history stays in engage.sync_changelog.
CREATE OR REPLACE VIEW engage.delivery_failures AS
SELECT f.run_id, f.key, f.destination, f.profile_id, f.user_id, f.op, f.value, f.status,
       coalesce(f.reason, f.last_error) AS reason, f.attempts, f.last_status_code, f.last_error, f.created_at
FROM engage.sync_changelog f
JOIN engage.outbox o ON o.id = f.outbox_id
LEFT JOIN engage.profiles p ON o.vero_id IS NULL AND p.profile_id = o.profile_id
CROSS JOIN LATERAL (SELECT coalesce(o.vero_id, p.user_id) AS user_id, CASE WHEN o.vero_id IS NULL THEN p.email END AS email) now_id
WHERE f.status IN ('failed', 'rejected', 'skipped')
  AND NOT EXISTS (
      SELECT 1 FROM engage.ledger l
      WHERE l.destination_id = o.destination_id AND l.computation_id = o.computation_id
        AND l.vero_id IN (now_id.user_id, now_id.email) AND l.outbox_id > o.id)
  AND NOT EXISTS (
      SELECT 1 FROM engage.outbox later
      WHERE later.destination_id = o.destination_id AND later.computation_id = o.computation_id
        AND later.vero_id IN (now_id.user_id, now_id.email) AND later.status = 'pending' AND later.id > o.id);
