-- The current snapshot: who is in each audience, and each profile's trait values.
CREATE VIEW engage.audience_members AS
SELECT c.key, m.profile_id, p.user_id, p.email, m.value, m.since, m.since_run
FROM engage.memberships m
JOIN engage.computations c ON c.id = m.computation_id
LEFT JOIN engage.profiles p ON p.profile_id = m.profile_id
WHERE c.removed_at IS NULL;
