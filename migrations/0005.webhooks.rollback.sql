DROP TABLE webhook_deliveries;
DROP INDEX image_jobs_webhooks_due;
ALTER TABLE image_jobs
    DROP COLUMN webhook_attempts,
    DROP COLUMN webhook_next_at,
    DROP COLUMN webhook_done_at;
DROP TABLE webhook_secrets;
