"""Test doubles for the adapters (an in-memory store, a capturing bus), so an actor body
runs in a unit test without Ray, a broker or a database.
"""
