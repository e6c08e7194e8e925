"""The processes sfa-ops runs itself (embedded mosquitto, test servers), log output,
Ray metrics export, and the one way a URL or DSN is shown to a person.
"""
