ALTER TABLE webhook_secrets
    DROP COLUMN previous_until,
    DROP COLUMN previous_nonce;
