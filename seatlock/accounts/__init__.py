"""Accounts apart from the engine: tokens, passwords, login throttling, mail, media storage."""
