-- depends: 0003.key-rotation
-- Asynchronous image jobs: the durable record of each job (the Redis stream only says
-- which to run next, and is rebuilt from here). The reservation taken at submission
-- (charge_day, charge_member, reserved) is settled once, when the job ends: the images
-- delivered stay charged, the rest is given back; settled_at says it was done.

CREATE TABLE image_jobs (
    seq             bigserial   NOT NULL UNIQUE,
    id              text        PRIMARY KEY,
    -- The Redis namespace (redis.key_prefix) whose queue and counters the job uses:
    -- gateways sharing a database but not a Redis namespace leave each other's jobs alone.
    queue           text        NOT NULL,
    user_id         uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    api_key_id      uuid        NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    status          text        NOT NULL DEFAULT 'queued'
                    CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'canceled')),
    model           text        NOT NULL,
    request         jsonb       NOT NULL,
    metadata        jsonb       NOT NULL DEFAULT '{}',
    webhook_url     text,
    result          jsonb,
    error_code      text,
    error_message   text,
    attempts        integer     NOT NULL DEFAULT 0,
    reserved        integer     NOT NULL,
    delivered       integer     NOT NULL DEFAULT 0,
    charge_day      integer     NOT NULL,
    charge_member   text        NOT NULL,
    created_at      timestamptz NOT NULL,
    started_at      timestamptz,
    heartbeat_at    timestamptz,
    completed_at    timestamptz,
    settled_at      timestamptz
);

CREATE INDEX image_jobs_user_seq ON image_jobs (user_id, seq DESC);
CREATE INDEX image_jobs_unfinished ON image_jobs (queue, created_at)
    WHERE status IN ('queued', 'running');
CREATE INDEX image_jobs_unsettled ON image_jobs (queue, completed_at)
    WHERE settled_at IS NULL AND status IN ('succeeded', 'failed', 'canceled');
