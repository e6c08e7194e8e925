"""Service health: classification with flap damping, one service's monitor (breaker +
health over the observers' deltas), and the loss of a service's last instance.
"""
