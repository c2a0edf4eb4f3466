"""A scheduled job monitored with Sentry Crons: ``monitor("nightly-report", ...)``.

Run once (``make demo`` does, under ``opentelemetry-instrument``), it counts the shop's orders
per product in the shop's database. The bridge sends an ``in_progress`` check-in when it starts
and ``ok`` (or ``error``) with the duration when it ends, both linked to the run's trace; the
run itself is a transaction (the ``nightly-report`` span, with the SQL query as a child span).

``SHOP_DATABASE_URL`` is the shop's SQLAlchemy URL (default: the shop's default SQLite file).
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import sqlalchemy as sa
from opentelemetry import trace

from otel_sentry_bridge import monitor

DATABASE_URL = (os.environ.get("SHOP_DATABASE_URL", "").strip()
                or f"sqlite:///{Path(tempfile.gettempdir()) / 'shop.db'}")
tracer = trace.get_tracer("examples.jobs.nightly_report")


@monitor("nightly-report", schedule="0 3 * * *", max_runtime=10)
def nightly_report() -> dict[int, int]:
    """Items ordered per product (the SELECT is a child span of the job's span)."""
    engine = sa.create_engine(DATABASE_URL)
    try:
        with tracer.start_as_current_span("report.build"), engine.connect() as conn:
            rows = conn.execute(sa.text(
                "SELECT product_id, SUM(quantity) FROM shop_orders GROUP BY product_id"
                " ORDER BY product_id"
            )).all()
    finally:
        engine.dispose()
    return {int(product): int(total) for product, total in rows}


def main() -> int:
    report = nightly_report()
    print("nightly report: " + (", ".join(f"product {p}: {n} ordered" for p, n in report.items())
                                or "no orders"), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
