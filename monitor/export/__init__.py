"""The export stage: where results leave the daemon.

``metrics`` (Prometheus metrics and their endpoint), ``web_config`` (TLS and basic auth of that endpoint), ``health``
(``seqmon health``, the check of that endpoint for container health checks), ``sink`` (dead letters and closed-window
results, to Kafka or memory).
"""
