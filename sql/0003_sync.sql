-- Destinations, the snapshot, the outbox, the ledger and runs (docs/architecture.md#how-syncs-behave).
-- Every table keyed by profile carries profile_id so it can be distributed by it (docs/performance.md).

CREATE TABLE engage.destinations (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name           text NOT NULL UNIQUE,
    kind           text NOT NULL DEFAULT 'vero' CHECK (kind IN ('vero')),
    base_url       text NOT NULL DEFAULT 'https://api.getvero.com',
    token_env      text NOT NULL DEFAULT 'VERO_AUTH_TOKEN',  -- the NAME of the variable, never the token
    rate           double precision NOT NULL DEFAULT 100 CHECK (rate > 0),          -- requests per second
    concurrency    integer NOT NULL DEFAULT 16 CHECK (concurrency BETWEEN 1 AND 1024),
    max_attempts   integer NOT NULL DEFAULT 10 CHECK (max_attempts >= 1),
    max_exit_ratio double precision NOT NULL DEFAULT 0.5 CHECK (max_exit_ratio >= 0 AND max_exit_ratio <= 1),
    allow_email_id boolean NOT NULL DEFAULT false,            -- send email-only profiles with the email as id
    enabled        boolean NOT NULL DEFAULT true,
    created_at     timestamptz NOT NULL DEFAULT now()
);

-- The current result of each definition: members (value true) or trait values.
CREATE TABLE engage.memberships (
    computation_id bigint NOT NULL REFERENCES engage.computations,
    profile_id     text NOT NULL,
    value          jsonb NOT NULL,
    since          timestamptz NOT NULL,   -- when this value was first seen
    PRIMARY KEY (computation_id, profile_id)
);

CREATE TABLE engage.sync_runs (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    computation_id bigint REFERENCES engage.computations,     -- NULL for forward
    destination_id bigint NOT NULL REFERENCES engage.destinations,
    mode           text NOT NULL CHECK (mode IN ('full', 'incremental', 'resync', 'remove', 'forward')),
    status         text NOT NULL CHECK (status IN ('running', 'succeeded', 'partial', 'failed', 'blocked', 'skipped')),
    members        integer NOT NULL DEFAULT 0,
    entered        integer NOT NULL DEFAULT 0,
    exited         integer NOT NULL DEFAULT 0,
    changed        integer NOT NULL DEFAULT 0,
    unchanged      integer NOT NULL DEFAULT 0,
    skipped        integer NOT NULL DEFAULT 0,
    superseded     integer NOT NULL DEFAULT 0,
    started_at     timestamptz NOT NULL DEFAULT now(),
    finished_at    timestamptz,
    evaluate_ms    double precision,
    diff_ms        double precision,
    deliver_ms     double precision,
    error          text
);
CREATE INDEX sync_runs_pair_idx ON engage.sync_runs (computation_id, destination_id, started_at DESC);

-- One row per intended change: the Segment call, its fate, every attempt's outcome.
CREATE TABLE engage.outbox (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id           bigint REFERENCES engage.sync_runs,
    destination_id   bigint NOT NULL REFERENCES engage.destinations,
    computation_id   bigint REFERENCES engage.computations,   -- NULL for forwarded messages
    profile_id       text,
    op               text NOT NULL CHECK (op IN ('enter', 'exit', 'change', 'forward')),
    value            jsonb,                                     -- the value this row tells the destination
    message          jsonb NOT NULL,                            -- the Segment-spec call
    request          jsonb,                                     -- the Vero request(s), without the token
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'delivered', 'failed', 'rejected', 'skipped', 'superseded')),
    reason           text,                                      -- why skipped or rejected
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    locked_until     timestamptz,                               -- a worker's lease
    locked_by        text,
    last_status_code integer,
    last_error       text,                                      -- at most 1 KiB
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    delivered_at     timestamptz
);
CREATE INDEX outbox_claim_idx ON engage.outbox (destination_id, next_attempt_at, id) WHERE status = 'pending';
CREATE INDEX outbox_open_idx ON engage.outbox (destination_id, computation_id, profile_id)
    WHERE status IN ('pending', 'skipped', 'failed');
CREATE INDEX outbox_run_idx ON engage.outbox (run_id);

-- The last value each destination confirmed (2xx), per definition and profile.
CREATE TABLE engage.ledger (
    destination_id bigint NOT NULL REFERENCES engage.destinations,
    computation_id bigint NOT NULL REFERENCES engage.computations,
    profile_id     text NOT NULL,
    value          jsonb NOT NULL,
    confirmed_at   timestamptz NOT NULL,
    outbox_id      bigint NOT NULL,
    PRIMARY KEY (destination_id, computation_id, profile_id)
);
