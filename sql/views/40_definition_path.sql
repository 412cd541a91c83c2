-- A definition's property or trait path as `#>` takes it, read as the definition parser reads
-- it: dots separate the levels, a backslash makes the next character literal (`utm\.source` is
-- one key), a trailing backslash is kept. Used by engage.explain.
CREATE FUNCTION engage.definition_path(path text) RETURNS text[]
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
    segments text[] := '{}';
    current text := '';
    escaping boolean := false;
    ch text;
BEGIN
    FOREACH ch IN ARRAY regexp_split_to_array(path, '') LOOP
        IF escaping THEN
            current := current || ch;
            escaping := false;
        ELSIF ch = '\' THEN
            escaping := true;
        ELSIF ch = '.' THEN
            segments := segments || current;
            current := '';
        ELSE
            current := current || ch;
        END IF;
    END LOOP;
    IF escaping THEN
        current := current || '\';
    END IF;
    RETURN segments || current;
END;
$$;
