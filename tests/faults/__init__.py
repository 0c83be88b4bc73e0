"""Fault injection: kill -9 of the backends and of a worker under a stream of bookings."""
