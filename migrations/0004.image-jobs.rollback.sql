DROP TABLE image_jobs;
