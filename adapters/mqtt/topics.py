"""MQTT topic names and filters: validation and wildcard matching (``+`` one level, ``#`` the rest).

Pure functions; :class:`TopicMatcher` is the bus's routing table when the broker gives no
subscription identifiers (filters split once, results cached per topic in a bounded dict).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from adapters.mqtt.config import MqttBusError

_CACHE_MAX = 4096  # distinct topics remembered; cleared when full (bounded, and cheap to refill)


class MqttTopicError(MqttBusError, ValueError):
    """An invalid MQTT topic name or filter."""


def validate_topic(topic: str) -> None:
    """A topic name to publish to: non-empty, no wildcards, no NUL."""
    if not topic or "+" in topic or "#" in topic or "\0" in topic:
        raise MqttTopicError(f"invalid MQTT topic name {topic!r} (empty, wildcard or NUL)")


def validate_filter(topic_filter: str) -> None:
    """A subscription filter: ``+`` only as a whole level, ``#`` only as the whole last level."""
    if not topic_filter or "\0" in topic_filter:
        raise MqttTopicError(f"invalid MQTT topic filter {topic_filter!r} (empty or NUL)")
    if topic_filter.startswith("$share/"):
        raise MqttTopicError(f"pass shared_group= instead of a $share/ prefix: {topic_filter!r}")
    levels = topic_filter.split("/")
    for i, level in enumerate(levels):
        if ("+" in level and level != "+") or ("#" in level and (level != "#" or i != len(levels) - 1)):
            raise MqttTopicError(f"invalid MQTT topic filter {topic_filter!r} at level {i} ({level!r})")


def _match_levels(filter_levels: tuple[str, ...], topic_levels: list[str]) -> bool:
    if topic_levels[0].startswith("$") and filter_levels[0] in ("+", "#"):
        return False  # MQTT 4.7.2: wildcards at the first level never match $-topics
    n = len(topic_levels)
    for i, f in enumerate(filter_levels):
        if f == "#":
            return True  # also matches the parent level: "a/#" matches "a"
        if i >= n or (f != "+" and f != topic_levels[i]):
            return False
    return len(filter_levels) == n


def topic_matches(topic_filter: str, topic: str) -> bool:
    """True if ``topic`` matches ``topic_filter`` under MQTT rules."""
    return _match_levels(tuple(topic_filter.split("/")), topic.split("/"))


class TopicMatcher:
    """Immutable routing table: filters → values; ``match(topic)`` returns each value once, in
    registration order. Build a new one when the filters change."""

    def __init__(self, entries: Iterable[tuple[str, Iterable[Any]]] = ()) -> None:
        self._entries = [(tuple(f.split("/")), tuple(values)) for f, values in entries]
        self._cache: dict[str, tuple[Any, ...]] = {}

    def match(self, topic: str) -> tuple[Any, ...]:
        found = self._cache.get(topic)
        if found is None:
            levels = topic.split("/")
            merged: dict[Any, None] = {}
            for filter_levels, values in self._entries:
                if _match_levels(filter_levels, levels):
                    merged.update(dict.fromkeys(values))
            found = tuple(merged)
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
            self._cache[topic] = found
        return found
