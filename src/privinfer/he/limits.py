"""HE server limits that the CLI needs without importing the engine (tenseal, torch)."""

from __future__ import annotations

DEFAULT_MAX_SESSIONS = 2  # sessions served at once; a MiniLM session peaks at 5-10 GB
