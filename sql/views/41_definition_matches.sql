-- Whether the jsonb value x (NULL: missing) meets the operator of a filter or trait condition
-- `f` (the object holding it, e.g. {"property": "total", "gte": 150}), with windows relative to
-- `at`: the operators of docs/definitions.md, two-valued, as the definition compiler writes
-- them. Used by engage.explain.
CREATE FUNCTION engage.definition_matches(f jsonb, x jsonb, at timestamptz) RETURNS boolean
LANGUAGE plpgsql STABLE PARALLEL SAFE AS $$
DECLARE
    present boolean := x IS NOT NULL AND x <> 'null'::jsonb;
    is_string boolean := coalesce(jsonb_typeof(x) = 'string', false);
    is_number boolean := coalesce(jsonb_typeof(x) = 'number', false);
    t text := x #>> '{}';
    ts timestamptz;
BEGIN
    IF f ? 'equals' THEN
        RETURN coalesce(x = f -> 'equals', false);
    ELSIF f ? 'not_equals' THEN
        RETURN present AND x <> f -> 'not_equals';
    ELSIF f ? 'gt' THEN
        RETURN CASE WHEN is_number THEN x::numeric > (f ->> 'gt')::numeric ELSE false END;
    ELSIF f ? 'gte' THEN
        RETURN CASE WHEN is_number THEN x::numeric >= (f ->> 'gte')::numeric ELSE false END;
    ELSIF f ? 'lt' THEN
        RETURN CASE WHEN is_number THEN x::numeric < (f ->> 'lt')::numeric ELSE false END;
    ELSIF f ? 'lte' THEN
        RETURN CASE WHEN is_number THEN x::numeric <= (f ->> 'lte')::numeric ELSE false END;
    ELSIF f ? 'one_of' THEN
        RETURN coalesce(x IN (SELECT jsonb_array_elements(f -> 'one_of')), false);
    ELSIF f ? 'none_of' THEN
        RETURN present AND coalesce(x NOT IN (SELECT jsonb_array_elements(f -> 'none_of')), false);
    ELSIF f ? 'contains' THEN
        RETURN is_string AND coalesce(strpos(t, f ->> 'contains') > 0, false);
    ELSIF f ? 'not_contains' THEN
        RETURN is_string AND coalesce(strpos(t, f ->> 'not_contains') = 0, false);
    ELSIF f ? 'starts_with' THEN
        RETURN is_string AND coalesce(starts_with(t, f ->> 'starts_with'), false);
    ELSIF f ? 'ends_with' THEN
        RETURN is_string AND coalesce(right(t, char_length(f ->> 'ends_with')) = f ->> 'ends_with', false);
    ELSIF f ? 'exists' THEN
        RETURN present = (f ->> 'exists')::boolean;
    END IF;
    ts := CASE WHEN is_string THEN engage.try_timestamptz(t) END;
    IF f ? 'before' THEN
        RETURN coalesce(ts < engage.definition_instant(f ->> 'before'), false);
    ELSIF f ? 'after' THEN
        RETURN coalesce(ts > engage.definition_instant(f ->> 'after'), false);
    ELSIF f ? 'within_last' THEN
        RETURN coalesce(ts >= at - engage.definition_interval(f ->> 'within_last') AND ts <= at, false);
    END IF;
    RAISE EXCEPTION 'no operator in %', f USING ERRCODE = 'invalid_parameter_value';
END;
$$;
