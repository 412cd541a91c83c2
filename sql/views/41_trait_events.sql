-- The events a computed trait `v` reads for one profile at instant `at` (its event, its window,
-- its filters), each with the value of its property (NULL for count, or when missing): what the
-- aggregate is taken over. Used by engage.explain_value.
CREATE FUNCTION engage.trait_events(v jsonb, profile_id text, at timestamptz)
RETURNS TABLE (occurred_at timestamptz, message_id text, x jsonb)
LANGUAGE sql STABLE AS $$
    SELECT e.occurred_at, e.message_id,
           CASE WHEN v ? 'property' THEN e.properties #> engage.definition_path(v ->> 'property') END
    FROM engage.events e
    WHERE e.profile_id = trait_events.profile_id AND e.event = v ->> 'event'
      AND (NOT v ? 'within' OR e.occurred_at >= at - engage.definition_interval(v ->> 'within'))
      AND NOT EXISTS (SELECT 1 FROM jsonb_array_elements(coalesce(v -> 'where', '[]')) f
                      WHERE NOT engage.definition_matches(f, e.properties #> engage.definition_path(f ->> 'property'), at))
$$;
