"""API keys: their format, and the layered cache that resolves them."""
