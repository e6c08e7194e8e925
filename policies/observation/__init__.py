"""The observers' per-message work: the observation policy, intake of calls,
call/response correlation and sharing the load between observers.
"""
