"""Serving on Ray Serve: the OpenAI-compatible app (app), its configuration (config), the
request and response shapes (schema), the checks every request passes (guards), ``/v1/verify``
(verify), and ``softverify serve`` (cli).

``app`` imports Ray Serve; the others do not, so the CLI can build its parser without it.
"""
