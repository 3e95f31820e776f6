"""The export stage: where results leave the daemon.

``metrics`` (Prometheus metrics and their endpoint), ``web_config`` (TLS and basic auth of that endpoint), ``sink``
(dead letters and closed-window results, to Kafka or memory).
"""
