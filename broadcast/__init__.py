"""The broadcast fabric of gqlws: ordered group events, subscription registry, edge streams.

Knows nothing of GraphQL. Its in-memory backend (embedded mode) and Redis
backend (distributed mode) arrive with subscriptions; see DESIGN.md.
"""

from __future__ import annotations

__all__: list[str] = []
