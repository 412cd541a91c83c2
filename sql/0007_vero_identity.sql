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
