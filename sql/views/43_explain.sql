-- Why a profile holds (or does not hold) definition `key` at instant `at`, as jsonb: the
-- definition's condition tree with each node's verdict and evidence (engage.explain_condition),
-- or a computed trait's value and the events that made it (engage.explain_value); `value` is
-- what an evaluation at `at` decides (true for a member, the trait's value, null: none). A SQL
-- definition's rows come from its own query, which is not run again: its `value` is what the
-- snapshot held at `at`. Then what is kept of it: `snapshot` (value and since), `history`
-- (superseded values with since/until), per destination the outbox rows (newest 20) and the
-- ledger, and the Vero email events that came back for the profile (newest 20). Raises 22023
-- for an unknown key, a removed definition, or a profile id nothing knows.
CREATE FUNCTION engage.explain(key text, profile_id text, at timestamptz DEFAULT now()) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    c engage.computations;
    profile jsonb;
    eligible boolean;
    node jsonb;
    value jsonb;
    known boolean;
BEGIN
    SELECT * INTO c FROM engage.computations WHERE computations.key = explain.key;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no definition has the key %', explain.key USING ERRCODE = 'invalid_parameter_value';
    ELSIF c.removed_at IS NOT NULL THEN
        RAISE EXCEPTION 'the definition % was removed at %', explain.key, c.removed_at USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT jsonb_build_object('profile_id', p.profile_id, 'user_id', p.user_id, 'email', p.email, 'traits', p.traits)
    INTO profile FROM engage.profiles p WHERE p.profile_id = explain.profile_id;
    IF profile IS NULL THEN
        known := EXISTS (SELECT 1 FROM engage.memberships m WHERE m.profile_id = explain.profile_id)
              OR EXISTS (SELECT 1 FROM engage.membership_history h WHERE h.profile_id = explain.profile_id)
              OR EXISTS (SELECT 1 FROM engage.ledger l WHERE l.profile_id = explain.profile_id)
              OR EXISTS (SELECT 1 FROM engage.outbox o WHERE o.profile_id = explain.profile_id);
        IF NOT known THEN
            RAISE EXCEPTION 'no profile has the id %', explain.profile_id USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END IF;
    eligible := profile IS NOT NULL AND (c.include_anonymous OR profile ->> 'user_id' IS NOT NULL OR profile ->> 'email' IS NOT NULL);
    IF c.definition ? 'condition' THEN
        node := engage.explain_condition(c.definition -> 'condition', profile, at, ARRAY[c.key]);
        value := CASE WHEN eligible AND (node ->> 'verdict')::boolean THEN 'true'::jsonb END;
    ELSIF c.definition ? 'value' THEN
        node := engage.explain_value(c.definition -> 'value', explain.profile_id, at, 10);
        value := CASE WHEN eligible THEN nullif(node -> 'value', 'null'::jsonb) END;
    ELSE
        SELECT m.value INTO value FROM engage.members_at(c.key, at) m WHERE m.profile_id = explain.profile_id;
        node := jsonb_build_object('kind', 'sql', 'query', c.definition ->> 'sql', 'value', value);
    END IF;
    RETURN jsonb_build_object(
        'key', c.key, 'type', c.type, 'enabled', c.enabled, 'at', at,
        'profile_id', explain.profile_id, 'profile', profile, 'deleted', profile IS NULL,
        'include_anonymous', c.include_anonymous, 'eligible', eligible,
        'value', value, 'explanation', node,
        'snapshot', (SELECT jsonb_build_object('value', m.value, 'since', m.since, 'run', m.since_run)
                     FROM engage.memberships m WHERE m.computation_id = c.id AND m.profile_id = explain.profile_id),
        'history', (SELECT coalesce(jsonb_agg(jsonb_build_object('value', h.value, 'since', h.since, 'until', h.until,
                                                                 'since_run', h.since_run, 'until_run', h.until_run)
                                              ORDER BY h.until), '[]')
                    FROM engage.membership_history h WHERE h.computation_id = c.id AND h.profile_id = explain.profile_id),
        'destinations', (SELECT coalesce(jsonb_agg(jsonb_build_object(
                'destination', d.name,
                'ledger', (SELECT coalesce(jsonb_agg(jsonb_build_object('vero_id', l.vero_id, 'value', l.value,
                                                                        'confirmed_at', l.confirmed_at, 'outbox_id', l.outbox_id)
                                                     ORDER BY l.confirmed_at), '[]')
                           FROM engage.ledger l
                           WHERE l.destination_id = d.id AND l.computation_id = c.id AND l.profile_id = explain.profile_id),
                'outbox', (SELECT coalesce(jsonb_agg(jsonb_build_object('id', o.id, 'run', o.run_id, 'op', o.op, 'value', o.value,
                                                                        'vero_id', o.vero_id, 'status', o.status, 'reason', o.reason,
                                                                        'attempts', o.attempts, 'last_status_code', o.last_status_code,
                                                                        'created_at', o.created_at, 'delivered_at', o.delivered_at)
                                                     ORDER BY o.id DESC), '[]')
                           FROM (SELECT * FROM engage.outbox o
                                 WHERE o.destination_id = d.id AND o.computation_id = c.id AND o.profile_id = explain.profile_id
                                 ORDER BY o.id DESC LIMIT 20) o))
                ORDER BY d.name), '[]')
            FROM engage.destinations d),
        'email_events', (SELECT coalesce(jsonb_agg(jsonb_build_object('event', e.event, 'occurred_at', e.occurred_at,
                                                                      'campaign', e.properties #>> '{campaign_name}')
                                                   ORDER BY e.occurred_at DESC), '[]')
                         FROM (SELECT * FROM engage.events e
                               WHERE e.profile_id = explain.profile_id AND e.event LIKE 'Email %'
                               ORDER BY e.occurred_at DESC LIMIT 20) e));
END;
$$;
