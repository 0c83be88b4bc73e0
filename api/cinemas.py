"""Cinemas routes."""

from __future__ import annotations

from api.routing import Router

router = Router("Cinemas")
