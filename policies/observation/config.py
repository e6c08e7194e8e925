"""``policies/observation.yaml``: call timeouts (per service), the observer tick, bounds."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from policies.common.config import Duration, PolicyModel, load_policy


class ServiceObservation(PolicyModel):
    """Per-service overrides."""

    call_timeout: Duration | None = Field(default=None, gt=0)


class ObservationPolicy(PolicyModel):
    """How observers correlate calls and ship what they saw."""

    call_timeout: Duration = Field(default=30.0, gt=0)
    tick: Duration = Field(default=0.25, gt=0)
    pending_cap: int = Field(default=100_000, ge=1)
    max_payload_bytes: int = Field(default=262_144, ge=1)
    discovered_idle_retire: Duration = Field(default=600.0, gt=0)
    """A service seen only in traffic (not configured, no presence) retires after this long without a call."""
    forward_every: Duration = Field(default=0.25, gt=0)
    """With several observers: how often the halves of pairs another observer owns are sent to it."""
    forward_batch_cap: int = Field(default=50_000, ge=1)
    """Most halves queued for one owner; beyond it they are counted as dropped."""
    early_response_hold: Duration = Field(default=2.0, gt=0)
    """How long a response that reached its owner before its (forwarded) call waits for it."""
    early_response_cap: int = Field(default=50_000, ge=1)
    offline_echo_timeout: Duration = Field(default=0.25, gt=0)
    """A service instance's offline is believed once the observer's echo returns through the broker
    (a stopping broker publishes every Will); on a live connection it is not waited for longer."""
    offline_recheck: Duration = Field(default=5.0, gt=0)
    """After a reconnect, how long an offline received around the broker's restart waits for its
    instance to announce itself online again before it is believed (``policies.health.outage_hold``)."""
    offline_settle: Duration = Field(default=1.0, gt=0)
    """After a reconnect, offlines received this soon (maybe Wills queued by the stopping broker) wait
    ``offline_recheck`` for their instance too, instead of being confirmed by an echo."""
    services: dict[str, ServiceObservation] = Field(default_factory=dict)

    def call_timeout_for(self, service: str) -> float:
        """The call timeout of ``service`` in seconds (its override, else the default)."""
        override = self.services.get(service)
        if override is not None and override.call_timeout is not None:
            return override.call_timeout
        return self.call_timeout

    def per_service_timeouts(self) -> dict[str, float]:
        """Only the services with their own timeout (for ``policies.observation.correlation``)."""
        return {n: s.call_timeout for n, s in self.services.items() if s.call_timeout is not None}


def load_observation_policy(overrides_dir: Path | str | None = None) -> ObservationPolicy:
    """Load ``observation.yaml`` (defaults, then the override directory's copy)."""
    return load_policy(ObservationPolicy, "observation.yaml", overrides_dir)


__all__ = ["ObservationPolicy", "ServiceObservation", "load_observation_policy"]
