-- depends: 0005.webhooks
-- Password changes and resets, and reading the audit log.
--
-- token_generation: every access token carries the generation it was issued under; a
-- password change or reset moves it on, so every token issued before stops working.
-- password_resets: one-time reset links, by the SHA-256 of their token (never the token).

ALTER TABLE users ADD COLUMN token_generation integer NOT NULL DEFAULT 0;

CREATE TABLE password_resets (
    token_hash text        PRIMARY KEY CHECK (token_hash ~ '^[0-9a-f]{64}$'),
    user_id    uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    expires_at timestamptz NOT NULL,
    used_at    timestamptz,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX password_resets_user_id_idx ON password_resets (user_id);

-- The audit log is read newest first, whole or by actor.
CREATE INDEX admin_audit_log_created_idx ON admin_audit_log (created_at, id);
CREATE INDEX admin_audit_log_actor_idx ON admin_audit_log (actor, created_at, id);
