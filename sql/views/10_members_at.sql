-- Who held a value of definition `key` at instant `at`, and from when to when (until NULL: still
-- holds it): the snapshot's rows that took effect by then, and the superseded values that held
-- then (since NULL: held from before the history was kept). "When did she become VIP?" reads
-- the snapshot alone (engage.audience_members.since).
CREATE FUNCTION engage.members_at(key text, at timestamptz)
RETURNS TABLE (profile_id text, value jsonb, since timestamptz, until timestamptz)
LANGUAGE sql STABLE AS $$
    SELECT m.profile_id, m.value, m.since, NULL::timestamptz
    FROM engage.computations c JOIN engage.memberships m ON m.computation_id = c.id
    WHERE c.key = members_at.key AND m.since <= members_at.at
    UNION ALL
    SELECT h.profile_id, h.value, h.since, h.until
    FROM engage.computations c JOIN engage.membership_history h ON h.computation_id = c.id
    WHERE c.key = members_at.key AND (h.since IS NULL OR h.since <= members_at.at) AND members_at.at < h.until
$$;
