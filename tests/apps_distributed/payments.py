"""Payments: the end of the chain. ``GET /payments/<cart_id>?fail=1`` raises."""

from __future__ import annotations

from _common import create_app, current_trace, received_trace_headers, serve
from flask import Response, jsonify, request

app = create_app("payments")


class PaymentDeclined(RuntimeError):
    pass


@app.get("/payments/<int:cart_id>")
def pay(cart_id: int) -> Response:
    if request.args.get("fail"):
        raise PaymentDeclined(f"card declined for cart {cart_id}")
    return jsonify({
        "service": "payments",
        "trace": current_trace(),
        "received": received_trace_headers(),
    })


if __name__ == "__main__":
    serve(app)
