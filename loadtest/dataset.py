"""Which seeded item or user a simulated user asks for next.

Item popularity follows Zipf's law (rank r is asked for in proportion to 1/r^s), as reads of a
catalogue do: a few hot items served from Redis almost every time, and a long tail of cold ones
that are cache misses because nobody asked for them within the cache's TTL.
"""

from __future__ import annotations

import bisect
import itertools
import random
from collections.abc import Mapping, Sequence
from typing import Any

# Ids the API has never handed out (bigint ids start at 1 and grow by one).
UNKNOWN_ID_BASE = 10**15


class DataSet:
    def __init__(self, item_ids: Sequence[int], user_ids: Sequence[int], zipf_s: float) -> None:
        if not item_ids or not user_ids:
            raise ValueError("the data set needs at least one item and one user")
        self.item_ids = list(item_ids)
        self.user_ids = list(user_ids)
        weights = (1 / rank**zipf_s for rank in range(1, len(self.item_ids) + 1))
        self._cumulative = list(itertools.accumulate(weights))

    def item(self, rng: random.Random) -> int:
        point = rng.random() * self._cumulative[-1]
        index = bisect.bisect_right(self._cumulative, point)
        return self.item_ids[min(index, len(self.item_ids) - 1)]

    def user(self, rng: random.Random) -> int:
        return rng.choice(self.user_ids)

    def hot_share(self, top: int) -> float:
        """Share of item reads that go to the `top` most popular items."""
        top = min(top, len(self._cumulative))
        return self._cumulative[top - 1] / self._cumulative[-1] if top > 0 else 0.0

    @staticmethod
    def unknown_id(rng: random.Random) -> int:
        return UNKNOWN_ID_BASE + rng.randrange(10**6)

    def message(self) -> dict[str, Any]:
        return {"item_ids": self.item_ids, "user_ids": self.user_ids}

    @classmethod
    def from_message(cls, data: Mapping[str, Any], zipf_s: float) -> DataSet:
        return cls(data["item_ids"], data["user_ids"], zipf_s)
