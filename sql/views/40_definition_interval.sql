-- A definition's duration ("90m", "12h", "30d", "2w") as an interval, as the compiler binds it.
CREATE FUNCTION engage.definition_interval(duration text) RETURNS interval
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT (left(duration, -1) || ' ' || CASE right(duration, 1) WHEN 'm' THEN 'minutes' WHEN 'h' THEN 'hours'
                                                              WHEN 'd' THEN 'days' WHEN 'w' THEN 'weeks' END)::interval
$$;
