"""HTTP: the one JSON client with its error tree (management APIs, webhooks, receivers) and
operate's status endpoint with its static page.
"""
