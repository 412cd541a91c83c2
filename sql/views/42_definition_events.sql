-- The events an event condition or a computed trait `spec` reads for one profile at instant
-- `at`: its event, its window (`within`, or `between` [older, newer]: older inclusive, newer
-- exclusive), its filters; each with the value of its `property` (NULL without one, or when
-- missing). What an event condition counts and a trait's aggregate is taken over, as the
-- definition compiler reads them. Used by engage.explain_condition and engage.explain_value.
CREATE FUNCTION engage.definition_events(spec jsonb, profile_id text, at timestamptz)
RETURNS TABLE (occurred_at timestamptz, message_id text, x jsonb)
LANGUAGE sql STABLE AS $$
    SELECT e.occurred_at, e.message_id,
           CASE WHEN spec ? 'property' THEN e.properties #> engage.definition_path(spec ->> 'property') END
    FROM engage.events e
    WHERE e.profile_id = definition_events.profile_id AND e.event = spec ->> 'event'
      AND (NOT spec ? 'within' OR e.occurred_at >= at - engage.definition_interval(spec ->> 'within'))
      AND (NOT spec ? 'between' OR (e.occurred_at >= at - engage.definition_interval(spec -> 'between' ->> 0)
                                    AND e.occurred_at < at - engage.definition_interval(spec -> 'between' ->> 1)))
      AND NOT EXISTS (SELECT 1 FROM jsonb_array_elements(coalesce(spec -> 'where', '[]')) f
                      WHERE NOT engage.definition_matches(f, e.properties #> engage.definition_path(f ->> 'property'), at))
$$;
