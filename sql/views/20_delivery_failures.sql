-- Only what is still unresolved: a failed, rejected or skipped row is resolved by a later
-- change for the same destination, definition and Vero user that was delivered (the ledger
-- holds a later confirmation) or is pending. A row skipped for want of a Vero id is resolved
-- by the same for the id its profile has now. The history stays in engage.sync_changelog; this
-- reads the outbox's rows alone (sync_changelog's backlog members are never failures, and a
-- plan through it evaluated them all).
CREATE VIEW engage.delivery_failures AS
SELECT o.run_id, c.key, d.name AS destination, o.profile_id, coalesce(o.vero_id, o.message ->> 'userId') AS user_id,
       o.op, o.value, o.status, coalesce(o.reason, o.last_error) AS reason, o.attempts, o.last_status_code, o.last_error,
       o.created_at
FROM engage.outbox o
JOIN engage.destinations d ON d.id = o.destination_id
LEFT JOIN engage.computations c ON c.id = o.computation_id
LEFT JOIN engage.profiles p ON o.vero_id IS NULL AND p.profile_id = o.profile_id
CROSS JOIN LATERAL (SELECT coalesce(o.vero_id, p.user_id) AS user_id, CASE WHEN o.vero_id IS NULL THEN p.email END AS email) now_id
WHERE o.status IN ('failed', 'rejected', 'skipped')
  AND NOT EXISTS (
      SELECT 1 FROM engage.ledger l
      WHERE l.destination_id = o.destination_id AND l.computation_id = o.computation_id
        AND l.vero_id IN (now_id.user_id, now_id.email) AND l.outbox_id > o.id)
  AND NOT EXISTS (
      SELECT 1 FROM engage.outbox later
      WHERE later.destination_id = o.destination_id AND later.computation_id = o.computation_id
        AND later.vero_id IN (now_id.user_id, now_id.email) AND later.status = 'pending' AND later.id > o.id);
