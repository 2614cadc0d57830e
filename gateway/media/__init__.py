"""Image bytes: checking that what an upstream sent is really an image."""
