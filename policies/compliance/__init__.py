"""Compliance: how calls and data accesses are classified, which accesses violate the
rules, and GDPR data-subject requests.
"""
