"""What a backend may still spend: one copy's own count, or one account a whole campaign shares.

A campaign runs several agent actors, each with its own copy of the backend. With a
per-copy budget five agents could spend five times the setting, so a campaign opens one
``UsdAccount`` (a Ray actor) and every copy draws on it through ``SharedUsdBudget``: a
request is refused once the account is spent, so the campaign spends at most its limit plus
the requests already in flight when it ran out.
"""

from __future__ import annotations

import threading
from typing import Any

from asiarch.llm.protocol import BudgetExceeded


def _spent_message(limit: float, spent: float) -> str:
    return f"LLM budget of ${limit:.2f} is spent (${spent:.4f}); no new requests"


class UsdBudget:
    """Spend so far against a limit, shared by every thread of one backend."""

    def __init__(self, limit: float | None):
        self.limit, self.spent = limit, 0.0
        self._lock = threading.Lock()

    def check(self) -> None:
        with self._lock:
            if self.limit is not None and self.spent >= self.limit:
                raise BudgetExceeded(_spent_message(self.limit, self.spent))

    def charge(self, usd: float) -> None:
        with self._lock:
            self.spent += usd


class UsdAccount:
    """One campaign's LLM spend (run as a Ray actor): every agent's backend opens requests against it."""

    def __init__(self, limit: float | None, spent: float = 0.0):
        self.limit, self.spent, self.requests, self.refused = limit, float(spent), 0, 0

    def open(self) -> str | None:
        """None when a request may start; else why not."""
        if self.limit is not None and self.spent >= self.limit:
            self.refused += 1
            return _spent_message(self.limit, self.spent)
        self.requests += 1
        return None

    def charge(self, usd: float) -> float:
        self.spent += float(usd)
        return self.spent

    def state(self) -> dict[str, Any]:
        return {"limit": self.limit, "spent": self.spent, "requests": self.requests, "refused": self.refused}


class SharedUsdBudget:
    """``UsdBudget``'s interface over a ``UsdAccount`` actor handle."""

    def __init__(self, account: Any):
        self.account = account

    @property
    def spent(self) -> float:
        import ray

        return ray.get(self.account.state.remote())["spent"]

    def check(self) -> None:
        import ray

        refused = ray.get(self.account.open.remote())
        if refused is not None:
            raise BudgetExceeded(refused)

    def charge(self, usd: float) -> None:
        import ray

        ray.get(self.account.charge.remote(usd))
