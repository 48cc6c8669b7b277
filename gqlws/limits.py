"""Per-connection limits: message rate, query depth and complexity.

Each limit is a consumer setting with a default that real clients never
meet and floods always do (see ``GraphqlWsConsumer``):

* ``TokenBucket``: a connection may send ``rate`` messages per second on
  average, in bursts of up to ``burst``. The bucket holds ``burst`` tokens,
  refills at ``rate`` per second, and each message takes one; a message that
  finds it empty is over the limit. Time is passed in, so the bucket is
  tested without a clock::

      bucket = TokenBucket(rate=100, burst=200, now=0.0)
      bucket.take(now=0.001)   # True while tokens remain

* ``depth_and_complexity_rule(max_depth, max_complexity)``: a graphql-core
  validation rule rejecting operations nested deeper than ``max_depth``
  selection sets, or selecting more than ``max_complexity`` fields in all
  (fragments expanded), so an expensive document is refused before any
  resolver runs, and refused once: the document cache keeps the verdict.
"""

from __future__ import annotations

from typing import Any

from graphql import (
    FieldNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
    ValidationRule,
)

__all__ = ["TokenBucket", "depth_and_complexity_rule"]


class TokenBucket:
    """Average ``rate`` per second, bursts up to ``burst``."""

    __slots__ = ("_last", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"A rate limit needs rate > 0 and burst >= 1, got {rate}, {burst}")
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._last = now

    def take(self, now: float) -> bool:
        """Spend one token; False if there is none (the message is over the limit)."""
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True


def depth_and_complexity_rule(
    max_depth: int | None, max_complexity: int | None
) -> type[ValidationRule]:
    """A validation rule class enforcing the given limits (None: no limit)."""

    class DepthAndComplexityRule(ValidationRule):
        def enter_operation_definition(self, node: OperationDefinitionNode, *_: Any) -> None:
            depth, fields = self._measure(node.selection_set, 1, frozenset())
            name = f"Operation '{node.name.value}'" if node.name else "The operation"
            if max_depth is not None and depth > max_depth:
                self.report_error(
                    GraphQLError(
                        f"{name} is nested {depth} levels deep; the limit is {max_depth}.", node
                    )
                )
            if max_complexity is not None and fields > max_complexity:
                self.report_error(
                    GraphQLError(
                        f"{name} selects {fields} fields; the limit is {max_complexity}.", node
                    )
                )

        def _measure(
            self, selection_set: SelectionSetNode | None, depth: int, seen: frozenset[str]
        ) -> tuple[int, int]:
            """(deepest level, number of fields) below ``selection_set``."""
            if selection_set is None:
                return depth - 1, 0
            deepest, fields = depth, 0
            for selection in selection_set.selections:
                if isinstance(selection, FieldNode):
                    fields += 1
                    if selection.selection_set is not None:
                        below, count = self._measure(selection.selection_set, depth + 1, seen)
                        deepest, fields = max(deepest, below), fields + count
                elif isinstance(selection, InlineFragmentNode):
                    below, count = self._measure(selection.selection_set, depth, seen)
                    deepest, fields = max(deepest, below), fields + count
                elif isinstance(selection, FragmentSpreadNode):
                    name = selection.name.value
                    fragment = self.context.get_fragment(name)
                    if fragment is None or name in seen:
                        continue  # unknown or cyclic: other rules report those
                    below, count = self._measure(fragment.selection_set, depth, seen | {name})
                    deepest, fields = max(deepest, below), fields + count
            return deepest, fields

    return DepthAndComplexityRule
