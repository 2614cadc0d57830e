-- depends: 0002.admin-audit-log
-- A rotated key names its successor, so it cannot be rotated a second time (which would
-- hand out a key that inherits the first rotation's grace expiry).

ALTER TABLE api_keys ADD COLUMN rotated_to uuid REFERENCES api_keys (id) ON DELETE SET NULL;
