-- Every change a run decided, and its fate: the outbox's rows, and the members a backlog has
-- still to enqueue, as pending (or skipped, without a Vero id), so an analyst sees a full sync's
-- work before delivery reaches it. user_id is the Vero id each row was addressed to.
CREATE VIEW engage.sync_changelog AS
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
