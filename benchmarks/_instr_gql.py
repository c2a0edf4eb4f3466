"""The strawberry schema of :mod:`bench_instrumentation` (module level: strawberry resolves the
annotations from the module's globals)."""

from __future__ import annotations

import strawberry


@strawberry.type
class Item:
    id: int
    a: str
    b: str
    c: float
    d: bool

    @strawberry.field
    def label(self) -> str:
        return f"item {self.id}"


@strawberry.type
class Query:
    @strawberry.field
    def items(self, n: int) -> list[Item]:
        return [Item(id=i, a="x", b="y", c=1.0, d=True) for i in range(n)]


def make_schema() -> strawberry.Schema:
    return strawberry.Schema(query=Query)
