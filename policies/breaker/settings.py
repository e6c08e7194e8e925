"""The circuit breaker's configuration: ``policies/circuit_breaker.yaml`` (``defaults:`` merged
with ``services.{Name}``), validated so a breaker built from it can always close again."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from policies.common.config import Duration, Percent, PolicyModel, format_duration, load_policy


class BreakerSettings(PolicyModel):
    """One service's breaker configuration (``defaults:`` merged with ``services.{Name}``)."""

    window: Duration = 300.0
    window_calls: int | None = Field(default=None, ge=1)
    window_bucket: Duration = 1.0
    minimum_calls: int = Field(default=10, ge=1)
    failure_rate_threshold: Percent = 50.0
    slow_call_duration: Duration = 5.0
    slow_call_rate_threshold: Percent = 100.0
    open_timeout: Duration = 60.0
    open_timeout_multiplier: float = Field(default=1.0, ge=1.0)
    max_open_timeout: Duration = 600.0
    half_open_max_calls: int = Field(default=3, ge=1)
    half_open_success_threshold: int = Field(default=3, ge=1)

    @model_validator(mode="after")
    def _consistent(self) -> BreakerSettings:
        if self.half_open_success_threshold > self.half_open_max_calls:
            raise ValueError(
                f"half_open_success_threshold ({self.half_open_success_threshold}) cannot exceed "
                f"half_open_max_calls ({self.half_open_max_calls}): the breaker could never close"
            )
        if self.max_open_timeout < self.open_timeout:
            raise ValueError(
                f"max_open_timeout ({format_duration(self.max_open_timeout)}) must be at least "
                f"open_timeout ({format_duration(self.open_timeout)})"
            )
        if not 0 < self.window_bucket <= self.window:
            raise ValueError(f"window_bucket must be > 0 and <= window ({format_duration(self.window)})")
        if self.open_timeout <= 0:
            raise ValueError("open_timeout must be greater than 0")
        return self

    def open_timeout_for(self, attempt: int) -> float:
        """Open timeout after ``attempt`` consecutive re-opens (0 = first open), capped."""
        return min(self.open_timeout * self.open_timeout_multiplier**attempt, self.max_open_timeout)


BreakerConfig = BreakerSettings


class BreakerOverride(PolicyModel):
    """Per-service keys; anything not set comes from ``defaults``."""

    window: Duration | None = None
    window_calls: int | None = Field(default=None, ge=1)
    window_bucket: Duration | None = None
    minimum_calls: int | None = Field(default=None, ge=1)
    failure_rate_threshold: Percent | None = None
    slow_call_duration: Duration | None = None
    slow_call_rate_threshold: Percent | None = None
    open_timeout: Duration | None = None
    open_timeout_multiplier: float | None = Field(default=None, ge=1.0)
    max_open_timeout: Duration | None = None
    half_open_max_calls: int | None = Field(default=None, ge=1)
    half_open_success_threshold: int | None = Field(default=None, ge=1)


class CircuitBreakerPolicy(PolicyModel):
    """``policies/circuit_breaker.yaml``."""

    defaults: BreakerSettings = BreakerSettings()
    services: dict[str, BreakerOverride] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _services_valid(self) -> CircuitBreakerPolicy:
        for name in self.services:
            try:
                self.for_service(name)
            except ValueError as exc:
                raise ValueError(f"services.{name}: {exc}") from exc
        return self

    def for_service(self, name: str) -> BreakerSettings:
        """The merged configuration of one service."""
        override = self.services.get(name)
        if override is None:
            return self.defaults
        merged = self.defaults.model_dump() | override.model_dump(exclude_unset=True)
        return BreakerSettings.model_validate(merged)


def load_breaker_policy(overrides_dir: Path | str | None = None) -> CircuitBreakerPolicy:
    """Load ``circuit_breaker.yaml`` (defaults, then the override directory's copy)."""
    return load_policy(CircuitBreakerPolicy, "circuit_breaker.yaml", overrides_dir)


__all__ = ["BreakerConfig", "BreakerOverride", "BreakerSettings", "CircuitBreakerPolicy", "load_breaker_policy"]
