"""Delivering alert notifications: one module per receiver type (its delivery function and its
:class:`~adapters.notify.base.Deliverer` declaration), registered in ``registry.DELIVERERS``.
"""
