-- What waits to be sent, per (definition, destination) pair, from kept figures: pending outbox
-- rows and the members a full sync's or resync's backlog has not reached yet (backlog, counted in
-- waiting). computation_id 0 holds a destination's forwarded calls. The one place "what waits"
-- is computed: engage.sync_status, engage.audience_sizes, `status`, the progress line and the
-- engage_sync_outbox_pending gauge all sum it.
CREATE VIEW engage.pair_waiting AS
SELECT coalesce(f.destination_id, b.destination_id) AS destination_id,
       coalesce(f.computation_id, b.computation_id) AS computation_id,
       coalesce(f.pending, 0) + coalesce(b.remaining, 0) AS waiting,
       coalesce(b.remaining, 0) AS backlog
FROM engage.pair_figures f
FULL JOIN engage.backlogs b ON b.destination_id = f.destination_id AND b.computation_id = f.computation_id;
