-- depends: 0005.webhooks
-- Rotating a webhook secret keeps the previous one for a grace period: webhooks are
-- signed with both until previous_until, so receivers can switch secrets without losing
-- any. Like the current secret, the previous one is stored only as the nonce it is
-- derived from (with a server-side key): a dump of the database alone cannot sign.

ALTER TABLE webhook_secrets
    ADD COLUMN previous_nonce text,
    ADD COLUMN previous_until timestamptz;
