-- A definition's timestamp (`before`, `after`) as an instant, as the definition parser reads
-- it: a bare year or date is its first instant in UTC; otherwise the text carries its offset.
CREATE FUNCTION engage.definition_instant(value text) RETURNS timestamptz
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT CASE length(value)
               WHEN 4 THEN make_timestamptz(value::int, 1, 1, 0, 0, 0, 'UTC')
               WHEN 10 THEN (value || 'T00:00:00Z')::timestamptz
               ELSE upper(value)::timestamptz
           END
$$;
