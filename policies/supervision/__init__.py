"""The supervisor's decisions: which services get a monitor, and what the status page,
``/status.json`` and the ops board show.
"""
