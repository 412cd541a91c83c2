-- Definitions of audiences and computed traits (docs/definitions.md).

CREATE TABLE engage.computations (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    key               text NOT NULL UNIQUE,          -- never reused, even after removal
    name              text NOT NULL,
    type              text NOT NULL CHECK (type IN ('audience', 'trait')),
    description       text,
    definition        jsonb NOT NULL,                -- the JSON document as defined
    sync_every        interval NOT NULL DEFAULT '1 hour',
    send_as           text NOT NULL DEFAULT 'identify' CHECK (send_as IN ('identify', 'track', 'both')),
    include_anonymous boolean NOT NULL DEFAULT false,
    destinations      text[],                        -- NULL: every enabled destination
    enabled           boolean NOT NULL DEFAULT true,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    removed_at        timestamptz                    -- a tombstone: the key stays taken
);

-- Parses a timestamp found in a JSON property, or NULL when it is not one. Only ISO-8601-like
-- text is tried, so words PostgreSQL would accept ('now', 'today', 'epoch') never match.
CREATE FUNCTION engage.try_timestamptz(value text) RETURNS timestamptz
LANGUAGE plpgsql STABLE PARALLEL SAFE AS $$
BEGIN
    IF value IS NULL OR value !~ '^\d{4}-\d{2}-\d{2}' THEN
        RETURN NULL;
    END IF;
    RETURN value::timestamptz;
EXCEPTION WHEN others THEN
    RETURN NULL;
END;
$$;
