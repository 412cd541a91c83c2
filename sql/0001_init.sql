-- engage-sync: source tables (docs/operations.md#loading-data) and settings.
-- The migrations runner creates schema engage and engage.schema_migrations before this runs.

CREATE TABLE engage.settings (
    key        text PRIMARY KEY,
    value      text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- The Engage "space" this installation is; sent as context.personas.space_id. Created once.
INSERT INTO engage.settings (key, value)
VALUES ('space_id', 'spa_' || replace(gen_random_uuid()::text, '-', ''));

CREATE TABLE engage.profiles (
    profile_id   text PRIMARY KEY,
    user_id      text UNIQUE,
    anonymous_id text,
    email        text,
    traits       jsonb NOT NULL DEFAULT '{}',
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX profiles_email_idx ON engage.profiles (email);
CREATE INDEX profiles_anonymous_id_idx ON engage.profiles (anonymous_id);

CREATE TABLE engage.events (
    message_id  text PRIMARY KEY,
    profile_id  text NOT NULL REFERENCES engage.profiles ON UPDATE CASCADE,
    event       text NOT NULL,
    properties  jsonb NOT NULL DEFAULT '{}',
    occurred_at timestamptz NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);
-- Event conditions filter on (event, time window) and group by profile: this index answers
-- them with an index-only scan when no property filter is involved.
CREATE INDEX events_event_time_idx ON engage.events (event, occurred_at) INCLUDE (profile_id);
CREATE INDEX events_profile_idx ON engage.events (profile_id, event, occurred_at);
