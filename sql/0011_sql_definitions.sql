-- SQL audiences and traits (docs/definitions.md#sql-audiences-and-sql-traits-your-own-tables): a
-- run of a SQL definition may create profiles (an
-- unknown user id or email in the query's rows); how many, per run.
ALTER TABLE engage.sync_runs ADD COLUMN created_profiles integer NOT NULL DEFAULT 0;
COMMENT ON COLUMN engage.sync_runs.created_profiles IS
    'Profiles this run''s SQL query created: user ids and emails engage.profiles did not know.';
