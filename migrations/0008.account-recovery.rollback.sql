DROP INDEX admin_audit_log_actor_idx;
DROP INDEX admin_audit_log_created_idx;
DROP TABLE password_resets;
ALTER TABLE users DROP COLUMN token_generation;
