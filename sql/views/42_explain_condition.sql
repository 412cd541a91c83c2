-- One node of an audience's condition for one profile at instant `at`, with its verdict and
-- its evidence (engage.explain): all/any/not with their parts; an event condition with the
-- window's bounds (`from` inclusive, `to` exclusive; none: unbounded), the filter, the count
-- of matching events against its rule, the first and last matching instants; a trait
-- condition with the value found (null: missing); an audience reference with its own
-- explanation (a condition audience is evaluated again, as the compiler inlines it; a SQL
-- audience is what its snapshot held at `at`). `profile` is the profile's row as jsonb, NULL
-- when there is none. `stack` holds the keys being explained, to refuse a cycle.
CREATE FUNCTION engage.explain_condition(c jsonb, profile jsonb, at timestamptz, stack text[]) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    items jsonb;
    node jsonb;
    referenced engage.computations;
    eligible boolean;
    window_from timestamptz;
    window_to timestamptz;
    matched bigint;
    first_at timestamptz;
    last_at timestamptz;
    rule text;
    n bigint;
    verdict boolean;
    trait_value jsonb;
    held record;
BEGIN
    IF c ? 'all' OR c ? 'any' THEN
        SELECT jsonb_agg(engage.explain_condition(item, profile, at, stack) ORDER BY i) INTO items
        FROM jsonb_array_elements(coalesce(c -> 'all', c -> 'any')) WITH ORDINALITY AS a(item, i);
        SELECT CASE WHEN c ? 'all' THEN bool_and((x ->> 'verdict')::boolean) ELSE bool_or((x ->> 'verdict')::boolean) END
        INTO verdict FROM jsonb_array_elements(items) x;
        RETURN jsonb_build_object('kind', CASE WHEN c ? 'all' THEN 'all' ELSE 'any' END, 'verdict', verdict, 'items', items);
    ELSIF c ? 'not' THEN
        node := engage.explain_condition(c -> 'not', profile, at, stack);
        RETURN jsonb_build_object('kind', 'not', 'verdict', NOT (node ->> 'verdict')::boolean, 'item', node);
    ELSIF c ? 'audience' THEN
        IF (c ->> 'audience') = ANY (stack) THEN
            RAISE EXCEPTION 'audience cycle %', array_to_string(stack || (c ->> 'audience'), ' → ')
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        SELECT * INTO referenced FROM engage.computations WHERE key = c ->> 'audience' AND removed_at IS NULL AND type = 'audience';
        IF NOT FOUND THEN
            RAISE EXCEPTION 'unknown audience %', c ->> 'audience' USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF referenced.definition ? 'sql' THEN
            SELECT m.value, m.since, m.until INTO held
            FROM engage.members_at(referenced.key, at) m WHERE m.profile_id = profile ->> 'profile_id';
            RETURN jsonb_build_object('kind', 'audience', 'audience', referenced.key, 'source', 'sql snapshot',
                                      'verdict', held.value IS NOT NULL, 'since', held.since, 'until', held.until);
        END IF;
        eligible := profile IS NOT NULL AND (referenced.include_anonymous
                    OR profile ->> 'user_id' IS NOT NULL OR profile ->> 'email' IS NOT NULL);
        node := engage.explain_condition(referenced.definition -> 'condition', profile, at, stack || referenced.key);
        RETURN jsonb_build_object('kind', 'audience', 'audience', referenced.key, 'source', 'condition',
                                  'eligible', eligible, 'verdict', eligible AND (node ->> 'verdict')::boolean,
                                  'condition', node);
    ELSIF c ? 'trait' THEN
        trait_value := (profile -> 'traits') #> engage.definition_path(c ->> 'trait');
        RETURN jsonb_build_object('kind', 'trait', 'trait', c ->> 'trait', 'operator', c - 'trait',
                                  'found', trait_value, 'verdict', engage.definition_matches(c, trait_value, at));
    END IF;
    -- An event condition: its window's bounds for the evidence, its events counted.
    IF c ? 'within' THEN
        window_from := at - engage.definition_interval(c ->> 'within');
    ELSIF c ? 'between' THEN
        window_from := at - engage.definition_interval(c -> 'between' ->> 0);
        window_to := at - engage.definition_interval(c -> 'between' ->> 1);
    END IF;
    SELECT count(*), min(m.occurred_at), max(m.occurred_at) INTO matched, first_at, last_at
    FROM engage.definition_events(c, profile ->> 'profile_id', at) m;
    rule := coalesce((SELECT k FROM jsonb_object_keys(c -> 'count') k LIMIT 1), 'at_least');
    n := coalesce((c -> 'count' ->> rule)::bigint, 1);
    verdict := CASE rule WHEN 'at_least' THEN matched >= n WHEN 'at_most' THEN matched <= n ELSE matched = n END;
    RETURN jsonb_build_object('kind', 'event', 'event', c ->> 'event', 'from', window_from, 'to', window_to,
                              'where', coalesce(c -> 'where', '[]'), 'count', matched, 'rule', jsonb_build_object(rule, n),
                              'first', first_at, 'last', last_at, 'verdict', verdict);
END;
$$;
