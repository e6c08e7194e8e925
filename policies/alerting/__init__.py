"""Alert routing with Alertmanager's semantics: the policy file, matchers, time intervals,
the routing tree, the dispatcher and notification log, enrichment, forwarding, payloads.
"""
