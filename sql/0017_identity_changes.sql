-- A pair's diff re-addresses the profiles whose Vero identity changed (a new user id or email,
-- a new or deleted profile row); the evaluator needs every profile whose row changed (its
-- traits). One log row per statement keeps both: `identity_ids` lists the profiles of an
-- UPDATE whose user id, email or profile id changed ('{}': none did, as after an ETL that
-- rewrites traits); NULL means every profile listed (an INSERT, a DELETE, and rows logged
-- before this migration). Without it, a nightly rewrite of every profile's traits made every
-- pair diff every profile.
ALTER TABLE engage.profile_changes ADD COLUMN identity_ids text[];

-- The UPDATE trigger of engage.profiles gets a function of its own (log_profile_changes keeps
-- INSERT, DELETE and TRUNCATE; its UPDATE branch is no longer called).
CREATE FUNCTION engage.log_profile_updates() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- A changed profile id shows as a row on one side only.
    INSERT INTO engage.profile_changes (source, profile_ids, identity_ids)
    SELECT 'profiles', array_agg(profile_id), coalesce(array_agg(profile_id) FILTER (WHERE moved), '{}')
    FROM (SELECT coalesce(n.profile_id, o.profile_id) AS profile_id,
                 o.profile_id IS NULL OR n.profile_id IS NULL
                     OR n.user_id IS DISTINCT FROM o.user_id OR n.email IS DISTINCT FROM o.email AS moved
          FROM old_rows o FULL JOIN new_rows n ON n.profile_id = o.profile_id) t
    HAVING count(*) > 0;
    RETURN NULL;
END;
$$;

DROP TRIGGER profiles_changes_update ON engage.profiles;
CREATE TRIGGER profiles_changes_update AFTER UPDATE ON engage.profiles
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION engage.log_profile_updates();

-- Why a run's evaluation was full (NULL for an incremental one): the first, a redefinition,
-- a gap in the change log, or the cost-based choice when the change log lists so many
-- profiles that evaluating every one costs less.
ALTER TABLE engage.sync_runs ADD COLUMN full_because text;
