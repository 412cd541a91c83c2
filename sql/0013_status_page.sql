-- The status page's reads, as functions: the page and an analyst in psql run the same
-- SQL (`SELECT * FROM engage.definition_runs('vip')`). Each reads through an index: a pair's runs
-- by sync_runs_pair_idx, a run's rows by outbox_run_idx, its failures by outbox_failed_idx;
-- nothing scans the outbox whole.

-- The rows of a run that failed, were rejected or were skipped, found without reading the run's
-- other rows: the pages group them. Failures are few, so the index is small and cheap to keep.
CREATE INDEX outbox_failed_idx ON engage.outbox (run_id) WHERE status IN ('failed', 'rejected', 'skipped');
