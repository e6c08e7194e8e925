"""Carrying out enforcement actions outside sfa-ops (Redis keys with TTL, EMQX bans).
"""
