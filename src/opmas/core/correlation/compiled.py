"""The compiled correlations of a rule set: what makes their observers and correlators."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from opmas.core.correlation.correlator import DEFAULT_LATENESS, DEFAULT_MAX_KEYS, Correlator
from opmas.core.correlation.link import LinkedCorrelation
from opmas.core.correlation.observer import Observer
from opmas.core.correlation.spec import Suppression


@dataclass
class CorrelationSet:
    """The compiled correlations (dependency order) and suppressions of a rule set;
    ``ruleset.correlations``. ``lateness`` (seconds) is the allowed out-of-orderness."""

    correlations: list[LinkedCorrelation]
    suppressions: dict[str, Suppression] = field(default_factory=dict)
    visible: dict[str, bool] = field(default_factory=dict)  # correlation id -> reported?
    lateness: float = DEFAULT_LATENESS
    max_keys: int = DEFAULT_MAX_KEYS  # per correlation: beyond it the stalest group is dropped

    def observer(self, state: dict[str, Any] | None = None) -> Observer:
        """The per-partition step (its hits go to a CorrelationStage's Correlator)."""
        return Observer(self.correlations, self.suppressions, self.lateness, state)

    def correlator(self, state: dict[str, Any] | None = None) -> Correlator:
        """The groups of every correlation, fed by one observer or many."""
        return Correlator(self.correlations, self.suppressions, self.visible, self.max_keys, state)
