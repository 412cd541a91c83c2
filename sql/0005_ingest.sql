-- Ingest helpers: merging identify traits in message order ("later wins").
CREATE AGGREGATE engage.jsonb_merge(jsonb) (SFUNC = jsonb_concat, STYPE = jsonb, INITCOND = '{}');
