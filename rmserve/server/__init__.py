"""``rmserve serve``: settings (flags and ``RMSERVE_*`` variables), wiring of the gRPC server,
health, reflection, HTTP front and metrics endpoint around the served models (one core each),
loading them and swapping a model's version, transport security, start-up and graceful
shutdown, and the container health check.

May import: every layer below it; nothing imports it but ``rmserve.testing`` and the command.
"""
