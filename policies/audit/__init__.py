"""The audit log: event schema, the events built from calls and accesses, the sanitizer
(redaction, secret shapes) and the anchors that pin the hash chains.
"""
