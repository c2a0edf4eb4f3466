"""The shop's Celery app: one task, ``shop.send_confirmation(order_id)``.

``POST /orders`` enqueues it when ``SHOP_CELERY_BROKER`` is set. ``make demo`` uses kombu's
SQLAlchemy transport over a SQLite file (``sqla+sqlite:///<tmp>/broker.db``: no Redis, no
RabbitMQ) and runs one worker under ``opentelemetry-instrument``::

    celery -A tasks worker --pool=solo --concurrency=1 --without-heartbeat \
        --without-gossip --without-mingle -Q shop

(from this folder). OpenTelemetry's Celery instrumentation makes the ``apply_async`` span in the
shop and the task's ``run`` span in the worker, one trace: the task is its own Sentry
transaction (op ``queue.task.celery``) continuing the ``POST /orders`` request's trace.

Configuration (environment variables; an empty value counts as unset):

``SHOP_CELERY_BROKER``
    Broker URL (default ``memory://``, which only works inside one process).
``SHOP_CELERY_QUEUE``
    Queue name (default ``shop``).
``SHOP_DATABASE_URL``
    The shop's database: the task reads the order back from it (see ``app.py``).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import sqlalchemy as sa
from celery import Celery


def _env(name: str) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or None


BROKER_URL = _env("SHOP_CELERY_BROKER") or "memory://"
QUEUE = _env("SHOP_CELERY_QUEUE") or "shop"
DATABASE_URL = _env("SHOP_DATABASE_URL") or f"sqlite:///{Path(tempfile.gettempdir()) / 'shop.db'}"

celery_app = Celery("shop", broker=BROKER_URL)
celery_app.conf.update(
    task_ignore_result=True,  # no result backend: nothing to set up
    task_default_queue=QUEUE,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)
app = celery_app  # `celery -A tasks` looks for `app` (or `celery`)

_engine: sa.Engine | None = None


def _db() -> sa.Engine:
    global _engine
    if _engine is None:
        _engine = sa.create_engine(DATABASE_URL)
    return _engine


@celery_app.task(name="shop.send_confirmation")
def send_confirmation(order_id: int) -> str:
    """Read the order back and "send" its confirmation (prints one line)."""
    with _db().connect() as conn:
        row = conn.execute(
            sa.text("SELECT product_id, quantity FROM shop_orders WHERE id = :id"),
            {"id": order_id},
        ).first()
    message = (f"order {order_id}: {row.quantity} x product {row.product_id}" if row is not None
               else f"order {order_id}: not found")
    print(f"confirmation sent: {message}", flush=True)
    return message
