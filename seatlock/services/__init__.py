"""The flows a request runs end to end (hold, book, cancel) on top of the engine and db."""
