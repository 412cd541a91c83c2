-- When each (definition, destination) pair last ran successfully (succeeded or partial) and when
-- it is next due: a sync_every after that run's instant (the run's clock, ENGAGE_SYNC_NOW
-- included; runs from before it had one count by their start). next_due is NULL for a pair that
-- never ran: it is due now. The one place the schedule is computed: `run` and `serve` pick the
-- pairs due by it, `status` and the status page show it (engage.sync_status).
CREATE VIEW engage.pair_schedule AS
SELECT c.id AS computation_id, d.id AS destination_id, last_ok.instant AS last_succeeded,
       last_ok.instant + c.sync_every AS next_due
FROM engage.computations c
CROSS JOIN engage.destinations d
LEFT JOIN LATERAL (SELECT max(coalesce(r.instant, r.started_at)) AS instant FROM engage.sync_runs r
                   WHERE r.computation_id = c.id AND r.destination_id = d.id
                     AND r.status IN ('succeeded', 'partial')) last_ok ON true;
