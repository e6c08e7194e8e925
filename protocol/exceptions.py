"""The protocol package's one exception type.

::

    ProtocolError          a message or a name does not fit the wire contract
"""

from __future__ import annotations


class ProtocolError(ValueError):
    """Raised for anything that does not fit the wire contract; ``field`` names where."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")
