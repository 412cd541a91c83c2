-- Paused destinations (docs/operations.md#running-as-a-service-engage-sync-serve): a destination
-- that answers 401/403 is paused — nothing is
-- claimed for it — until its settings change or `engage-sync destination resume NAME`.
ALTER TABLE engage.destinations
    ADD COLUMN paused_at     timestamptz,
    ADD COLUMN paused_reason text;   -- why, e.g. 'HTTP 401 from Vero: the auth token was rejected'
