-- Views for analysts (docs/analysts.md): plain SQL over the sync tables.

CREATE INDEX outbox_computation_status_idx ON engage.outbox (computation_id, status);
