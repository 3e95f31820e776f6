"""The daemon stage, ``seqmon run``: the shell around the pipeline.

``run`` (the loop, signals, timers), ``offsets`` (next offset per partition), ``checkpoint`` (the single daemon's
state directory), ``fleet`` and ``changelog`` (fleet-wide windows kept in a Kafka topic), ``logs``.
"""
