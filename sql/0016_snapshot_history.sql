-- The snapshot carries its own history (docs/architecture.md#the-snapshot-and-its-history), in
-- the shape of a system-versioned table: each snapshot row holds its value and since when (the
-- instant and the run); `membership_history` receives a row only when a value is superseded —
-- a profile leaves, or its value changes — holding that value with its `since` and `until`.
-- A first sync writes one row per member (before: a snapshot row and a history row).
--
-- The history was also the feed each (definition, destination) pair diffed from (rows after
-- its watermark). That feed is now `snapshot_changes`: one row per evaluation that changed
-- anything, listing the profiles it changed.

-- The run whose evaluation gave a snapshot row its value (NULL: not known, from before 0016).
ALTER TABLE engage.memberships ADD COLUMN since_run bigint;
UPDATE engage.memberships m SET since_run = h.run_id
FROM (SELECT DISTINCT ON (computation_id, profile_id) computation_id, profile_id, run_id
      FROM engage.membership_history ORDER BY computation_id, profile_id, id DESC) h
WHERE h.computation_id = m.computation_id AND h.profile_id = m.profile_id AND h.run_id IS NOT NULL;

-- What an evaluation changed, for the pairs' diffs. profile_ids NULL: every profile may have
-- changed (a first sync into an empty snapshot, where listing them is writing the snapshot
-- twice): a pair that reads it diffs in full.
CREATE TABLE engage.snapshot_changes (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    computation_id bigint NOT NULL,
    run_id         bigint,
    profile_ids    text[]
);
CREATE INDEX snapshot_changes_computation_idx ON engage.snapshot_changes (computation_id, id);

-- The changes some pair has not diffed yet, carried over: the profiles of the old history after
-- the lowest watermark of each definition's pairs. A pair further on diffs them again and finds
-- nothing to send (the diff compares with the ledger).
INSERT INTO engage.snapshot_changes (computation_id, profile_ids)
SELECT h.computation_id, array_agg(DISTINCT h.profile_id)
FROM engage.membership_history h
JOIN (SELECT computation_id, min(history_id) AS low FROM engage.pair_watermarks GROUP BY 1) w
  ON w.computation_id = h.computation_id AND h.id > w.low
GROUP BY h.computation_id;
ALTER TABLE engage.pair_watermarks RENAME COLUMN history_id TO change_id;
UPDATE engage.pair_watermarks SET change_id = 0;

-- The superseded values. since NULL: held from before the history was kept.
CREATE TABLE engage.superseded_values (
    computation_id bigint NOT NULL,
    profile_id     text NOT NULL,
    value          jsonb NOT NULL,
    since          timestamptz,
    until          timestamptz NOT NULL,
    since_run      bigint,
    until_run      bigint
);
-- From the old rows (one per change): each value that a later change ended.
INSERT INTO engage.superseded_values (computation_id, profile_id, value, since, until, since_run, until_run)
SELECT computation_id, profile_id, value, changed_at, next_at, run_id, next_run
FROM (SELECT h.computation_id, h.profile_id, h.value, h.changed_at, h.run_id,
             lead(h.id) OVER w AS next_id, lead(h.changed_at) OVER w AS next_at, lead(h.run_id) OVER w AS next_run
      FROM engage.membership_history h
      WINDOW w AS (PARTITION BY h.computation_id, h.profile_id ORDER BY h.id)) s
WHERE value IS NOT NULL AND next_id IS NOT NULL AND changed_at < next_at
UNION ALL
-- A value held before the first change the history recorded.
SELECT computation_id, profile_id, previous_value, NULL, changed_at, NULL, run_id
FROM (SELECT DISTINCT ON (computation_id, profile_id) * FROM engage.membership_history
      ORDER BY computation_id, profile_id, id) first
WHERE previous_value IS NOT NULL;
DROP TABLE engage.membership_history;
ALTER TABLE engage.superseded_values RENAME TO membership_history;
-- Written in `until` order, a definition at a time: a block-range index finds a definition's
-- rows, or an instant's, for a few bytes per 128 pages.
CREATE INDEX membership_history_brin ON engage.membership_history USING brin (computation_id, until);
