"""Infrastructure (tier 3): check results, per-component hysteresis, the wire messages
and alerts of the checkers, and Kubernetes workload state.
"""
