"""Data-plane agents: make a data plane's traffic follow the control plane's decisions (SPEC §9).

``agent`` is the shared client loop (stream, reconcile, fencing, metrics); each other module drives
one data plane: ``haproxy`` (Runtime API), ``forwarder`` (the built-in TCP forwarder).
"""
