"""Accounts: passwords, tokens, and throttling of the account endpoints."""
