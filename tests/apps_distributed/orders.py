"""Orders: called by the gateway; calls payments with ``httpx``.

``ORDERS_PAYMENTS_URL``: base URL of payments. ``?fail=1`` is passed on.
"""

from __future__ import annotations

import os

import httpx
from _common import create_app, current_trace, received_trace_headers, serve
from flask import Response, jsonify, request

PAYMENTS_URL = os.environ["ORDERS_PAYMENTS_URL"].rstrip("/")

app = create_app("orders")
client = httpx.Client(trust_env=False, timeout=10.0)  # loopback: no proxy


@app.get("/orders/<int:cart_id>")
def order(cart_id: int) -> tuple[Response, int]:
    params = {"fail": "1"} if request.args.get("fail") else {}
    resp = client.get(f"{PAYMENTS_URL}/payments/{cart_id}", params=params)
    try:
        body = resp.json()
    except ValueError:
        body = None
    return jsonify({
        "service": "orders",
        "trace": current_trace(),
        "received": received_trace_headers(),
        "downstream": {"status": resp.status_code, "body": body},
    }), 200 if resp.is_success else 502


if __name__ == "__main__":
    serve(app)
