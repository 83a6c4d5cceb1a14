"""One authentication run's resolver and deadline, shared by its SPF, DKIM and DMARC checks."""

from __future__ import annotations

import time
from dataclasses import dataclass

from relay.dns import Resolver


@dataclass(frozen=True)
class LookupScope:
    """One evaluation's resolver and deadline, handed to the worker threads."""

    resolver: Resolver
    deadline: float

    def remaining(self) -> float:
        return self.deadline - time.monotonic()
