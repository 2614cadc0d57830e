DROP TABLE usage;
DROP TABLE api_keys;
DROP TABLE users;
DROP FUNCTION set_updated_at();
