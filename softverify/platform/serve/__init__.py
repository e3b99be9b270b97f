"""Serving on Ray Serve: the OpenAI-compatible app (app), its request/config schema and
limits (api), ``/v1/verify`` (verify), and ``softverify serve`` (cli).

``app`` imports Ray Serve; the others do not, so the CLI can build its parser without it.
"""
