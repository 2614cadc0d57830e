ALTER TABLE image_jobs DROP COLUMN charge_backend;
DROP TABLE usage_by_model;
