"""The pure failover domain: models, the health state machine, strategies, redundancy, decisions.

Standard library only; no clock reads, no I/O. Everything here is plain functions over plain values.
"""
