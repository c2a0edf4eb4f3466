"""The gateway: the head of the trace; calls orders with ``requests``.

``GATEWAY_ORDERS_URL``: base URL of orders. ``GET /checkout/<cart_id>`` calls orders once, or
``?calls=N`` times in a row; ``?fail=1`` asks payments to fail.
"""

from __future__ import annotations

import os

import requests
from _common import create_app, current_trace, received_trace_headers, serve
from flask import Response, jsonify, request

ORDERS_URL = os.environ["GATEWAY_ORDERS_URL"].rstrip("/")

app = create_app("gateway")


@app.get("/checkout/<int:cart_id>")
def checkout(cart_id: int) -> tuple[Response, int]:
    params = {"fail": "1"} if request.args.get("fail") else {}
    calls = []
    with requests.Session() as session:
        session.trust_env = False  # loopback: no proxy from the environment
        for _ in range(int(request.args.get("calls", "1"))):
            resp = session.get(f"{ORDERS_URL}/orders/{cart_id}", params=params, timeout=10)
            try:
                body = resp.json()
            except ValueError:
                body = None
            calls.append({"status": resp.status_code, "body": body})
    return jsonify({
        "service": "gateway",
        "trace": current_trace(),
        "received": received_trace_headers(),
        "downstream": calls[0],
        "calls": calls,
    }), 200 if all(call["status"] == 200 for call in calls) else 502


if __name__ == "__main__":
    serve(app)
