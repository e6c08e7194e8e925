"""Circuit breakers: the per-service state machine, its sliding outcome windows, and
cascading-failure prevention over the dependency graph.
"""
