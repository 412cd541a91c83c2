-- The exit value each pair's diff last told leavers. Redefining a trait can change it (a count's
-- 0 where a min's null was): the next run of each pair then diffs every profile, so the ids the
-- ledger says hold the old exit value are told the new one. NULL: not recorded yet (taken as
-- unchanged).
ALTER TABLE engage.pair_watermarks ADD COLUMN exit_value jsonb;
