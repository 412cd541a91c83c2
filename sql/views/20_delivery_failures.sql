-- Only what is still unresolved: a failed, rejected or skipped row is resolved by a later
-- change for the same destination, definition and Vero user that was delivered (the ledger
-- holds a later confirmation) or is pending. A row skipped for want of a Vero id is resolved
-- by the same for the id its profile has now. The history stays in engage.sync_changelog.
CREATE VIEW engage.delivery_failures AS
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
