"""seatlock: a Redis-centric seat-lock server for cinema booking."""

__version__ = "0.1.0"
