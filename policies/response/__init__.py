"""Incident response: from a security alert to a plan (escalation, guards on
enforcement), the effects of each action, evidence, incident expiry.
"""
