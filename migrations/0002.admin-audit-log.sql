-- depends: 0001.initial
-- Who changed what through the admin API, and when. Never holds a secret.

CREATE TABLE admin_audit_log (
    id         uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    actor      text        NOT NULL,
    action     text        NOT NULL,
    target_id  uuid        NOT NULL,
    details    jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX admin_audit_log_target_idx ON admin_audit_log (target_id, created_at);
