-- depends: 0004.image-jobs
-- Signed webhooks when a job ends (Standard Webhooks). A user's signing secret is never
-- stored: it is derived from a server-side key and the nonce kept here, so a dump of
-- the database alone cannot sign. A job's pending webhook is part of its row (due from
-- webhook_next_at until webhook_done_at), set in the same update that ends the job.

CREATE TABLE webhook_secrets (
    user_id     uuid        PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    nonce       text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE image_jobs
    ADD COLUMN webhook_attempts integer NOT NULL DEFAULT 0,
    ADD COLUMN webhook_next_at  timestamptz,
    ADD COLUMN webhook_done_at  timestamptz;

CREATE INDEX image_jobs_webhooks_due ON image_jobs (queue, webhook_next_at)
    WHERE webhook_next_at IS NOT NULL;

CREATE TABLE webhook_deliveries (
    id            bigserial   PRIMARY KEY,
    job_id        text        NOT NULL REFERENCES image_jobs (id) ON DELETE CASCADE,
    webhook_id    text        NOT NULL,
    attempt       integer     NOT NULL,
    status_code   integer,
    error         text,
    attempted_at  timestamptz NOT NULL
);

CREATE INDEX webhook_deliveries_job ON webhook_deliveries (job_id);
