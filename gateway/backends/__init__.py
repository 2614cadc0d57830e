"""Upstream image backends: the interface, the registry, and the built-in ones."""
