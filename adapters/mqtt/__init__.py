"""The MQTT bus (one aiomqtt connection per process) and what rides on it: client and
config, topic validation, the outbox, message signing, W3C trace context.
"""
