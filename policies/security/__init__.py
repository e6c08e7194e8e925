"""Security detection: the detection rules over bounded per-entity state, their alerts,
replay over history, and who may publish and subscribe what on the broker.
"""
