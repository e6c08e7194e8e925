"""Delivering alert notifications: one function per receiver type, registered in
``DELIVERERS``.
"""
