-- A computed trait's value for one profile at instant `at`, with its evidence (engage.explain):
-- the matching events' count, the window's start (none: all time), the first `shown` of them
-- (instant, message id and the property's value) and how many more there are, and the value
-- the aggregate makes of them, as the definition compiler computes it (NULL: no value).
CREATE FUNCTION engage.explain_value(v jsonb, profile_id text, at timestamptz, shown int) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    window_from timestamptz := at - engage.definition_interval(v ->> 'within');
    aggregate text := v ->> 'aggregate';
    matched bigint;
    events jsonb;
    value jsonb;
BEGIN
    SELECT count(*) INTO matched FROM engage.definition_events(v, explain_value.profile_id, at);
    SELECT coalesce(jsonb_agg(jsonb_build_object('occurred_at', m.occurred_at, 'message_id', m.message_id, 'value', m.x)
                              ORDER BY m.occurred_at, m.message_id), '[]')
    INTO events FROM (SELECT * FROM engage.definition_events(v, explain_value.profile_id, at) t ORDER BY t.occurred_at, t.message_id LIMIT shown) m;
    value := CASE aggregate
        WHEN 'count' THEN (SELECT to_jsonb(count(*)) FROM engage.definition_events(v, explain_value.profile_id, at) HAVING count(*) > 0)
        WHEN 'sum' THEN (SELECT to_jsonb(trim_scale(sum(x::numeric))) FROM engage.definition_events(v, explain_value.profile_id, at) WHERE jsonb_typeof(x) = 'number')
        WHEN 'avg' THEN (SELECT to_jsonb(trim_scale(round(avg(x::numeric), 6))) FROM engage.definition_events(v, explain_value.profile_id, at) WHERE jsonb_typeof(x) = 'number')
        WHEN 'min' THEN (SELECT to_jsonb(trim_scale(min(x::numeric))) FROM engage.definition_events(v, explain_value.profile_id, at) WHERE jsonb_typeof(x) = 'number')
        WHEN 'max' THEN (SELECT to_jsonb(trim_scale(max(x::numeric))) FROM engage.definition_events(v, explain_value.profile_id, at) WHERE jsonb_typeof(x) = 'number')
        WHEN 'first' THEN (SELECT (array_agg(x ORDER BY occurred_at, message_id))[1] FROM engage.definition_events(v, explain_value.profile_id, at)
                           WHERE x IS NOT NULL AND x <> 'null'::jsonb)
        WHEN 'last' THEN (SELECT (array_agg(x ORDER BY occurred_at DESC, message_id DESC))[1] FROM engage.definition_events(v, explain_value.profile_id, at)
                          WHERE x IS NOT NULL AND x <> 'null'::jsonb)
        WHEN 'most_frequent' THEN (SELECT x FROM engage.definition_events(v, explain_value.profile_id, at) WHERE x IS NOT NULL AND x <> 'null'::jsonb
                                   GROUP BY x HAVING count(*) >= 2 ORDER BY count(*) DESC, (x #>> '{}') COLLATE "C" LIMIT 1)
        WHEN 'unique_list' THEN (SELECT jsonb_agg(x ORDER BY (x #>> '{}') COLLATE "C")
                                 FROM (SELECT DISTINCT x FROM engage.definition_events(v, explain_value.profile_id, at) WHERE x IS NOT NULL AND x <> 'null'::jsonb) d)
        WHEN 'unique_list_count' THEN (SELECT to_jsonb(count(DISTINCT x)) FROM engage.definition_events(v, explain_value.profile_id, at)
                                       WHERE x IS NOT NULL AND x <> 'null'::jsonb HAVING count(*) > 0)
    END;
    RETURN jsonb_build_object('kind', 'value', 'aggregate', aggregate, 'event', v ->> 'event', 'property', v ->> 'property',
                              'where', coalesce(v -> 'where', '[]'), 'from', window_from, 'count', matched,
                              'events', events, 'more', greatest(matched - shown, 0), 'value', value);
END;
$$;
