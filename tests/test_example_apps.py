"""The example apps behave, run plainly (no OpenTelemetry) in subprocesses.

The SQLite tests need nothing but the venv. The ``services`` test needs PostgreSQL and Redis on
loopback: it skips when they are unreachable, except under CI=true, where it fails instead.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from apps import INVENTORY_APP, SHOP_APP, AppProcess, free_port

POSTGRES_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
REDIS_URL = "redis://127.0.0.1:6379/0"
SERVICES = {"PostgreSQL": ("127.0.0.1", 5432), "Redis": ("127.0.0.1", 6379)}


def _json(body: bytes) -> Any:
    return json.loads(body)


@pytest.fixture(scope="module")
def inventory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppProcess]:
    db = tmp_path_factory.mktemp("inventory") / "inventory.db"
    env = {"INVENTORY_DATABASE_URL": f"sqlite:///{db}"}
    with AppProcess(INVENTORY_APP, env, free_port(), instrument=False) as app:
        yield app


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory, inventory: AppProcess) -> Iterator[AppProcess]:
    db = tmp_path_factory.mktemp("shop") / "shop.db"
    env = {
        "SHOP_DATABASE_URL": f"sqlite:///{db}",
        "SHOP_REDIS_URL": "",
        "SHOP_INVENTORY_URL": inventory.base_url,
    }
    with AppProcess(SHOP_APP, env, free_port(), instrument=False) as app:
        yield app


def test_health(shop: AppProcess, inventory: AppProcess) -> None:
    for app in (shop, inventory):
        status, body, _ = app.get("/health")
        assert (status, body) == (200, b"ok")


def test_products(shop: AppProcess) -> None:
    status, body, headers = shop.get("/products")
    assert status == 200
    assert headers["content-type"] == "application/json"
    products = _json(body)
    assert [p["id"] for p in products] == [1, 2, 3, 4]
    assert products[0] == {"id": 1, "name": "Coffee mug", "price_cents": 1200}


def test_product_detail_with_inventory(shop: AppProcess) -> None:
    status, body, _ = shop.get("/products/1")
    assert status == 200
    assert _json(body) == {
        "id": 1,
        "name": "Coffee mug",
        "price_cents": 1200,
        "cached": False,
        "stock": 42,
    }


def test_unknown_product_is_404(shop: AppProcess) -> None:
    status, body, _ = shop.get("/products/999")
    assert status == 404
    assert _json(body) == {"error": "product not found"}


def test_create_order(shop: AppProcess) -> None:
    status, body, _ = shop.post("/orders", {"product_id": 2, "quantity": 3})
    assert status == 201
    order = _json(body)
    assert isinstance(order["order_id"], int)
    assert order | {"order_id": 0} == {
        "order_id": 0,
        "product_id": 2,
        "quantity": 3,
        "reserved": True,
    }
    status, body, _ = shop.post("/orders", {"product_id": 2, "quantity": 1})
    assert status == 201
    assert _json(body)["order_id"] > order["order_id"]


@pytest.mark.parametrize(
    ("payload", "status"),
    [
        ({"product_id": 999, "quantity": 1}, 404),
        ({"product_id": "1", "quantity": 1}, 400),
        ({"product_id": 1, "quantity": 0}, 400),
        ([1, 2], 400),
    ],
)
def test_create_order_rejects(shop: AppProcess, payload: Any, status: int) -> None:
    assert shop.post("/orders", payload)[0] == status


def test_fail_is_500(shop: AppProcess) -> None:
    status, _, _ = shop.get("/fail")
    assert status == 500
    assert "RuntimeError: boom" in shop.output()


def test_slow_and_search(shop: AppProcess) -> None:
    assert shop.get("/slow")[:2] == (200, b"slow")
    status, body, _ = shop.get("/search?q=mug")
    assert status == 200
    assert [p["name"] for p in _json(body)] == ["Coffee mug", "Travel mug"]
    # LIKE wildcards in the query are matched literally.
    assert _json(shop.get("/search?q=%25")[1]) == []


def test_inventory_routes(inventory: AppProcess) -> None:
    assert _json(inventory.get("/stock/2")[1]) == {"product_id": 2, "stock": 7}
    assert _json(inventory.get("/stock/999")[1]) == {"product_id": 999, "stock": 0}
    status, body, _ = inventory.post("/reserve", {"product_id": 1, "quantity": 2})
    assert status == 200
    assert _json(body)["reserved"] is True


def test_sigterm_exits_cleanly(tmp_path: Path) -> None:
    env = {"INVENTORY_DATABASE_URL": f"sqlite:///{tmp_path / 'inventory.db'}"}
    app = AppProcess(INVENTORY_APP, env, free_port(), instrument=False)
    app.stop()
    assert app.returncode == 0, app.output()


def test_early_exit_reports_output(tmp_path: Path) -> None:
    env = {"SHOP_DATABASE_URL": "nosuchdialect://"}
    with pytest.raises(RuntimeError, match=r"(?s)exited with code 1.*NoSuchModuleError"):
        AppProcess(SHOP_APP, env, free_port(), instrument=False)


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def _require_services() -> None:
    missing = [name for name, addr in SERVICES.items() if not _reachable(*addr)]
    if missing:
        message = f"unreachable on loopback: {', '.join(missing)}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message} (CI=true: services must be running)")
        pytest.skip(message)


@pytest.mark.services
def test_shop_on_postgres_and_redis() -> None:
    _require_services()
    env = {
        "SHOP_DATABASE_URL": POSTGRES_URL,
        "SHOP_REDIS_URL": REDIS_URL,
        "SHOP_INVENTORY_URL": "",
    }
    with AppProcess(SHOP_APP, env, free_port(), instrument=False) as shop:
        status, body, _ = shop.get("/products")
        assert status == 200
        assert {1, 2, 3, 4} <= {p["id"] for p in _json(body)}

        expected = {"id": 3, "name": "Sticker pack", "price_cents": 500, "stock": None}
        # The Redis and the database are shared with concurrent runs, whose orders may
        # delete product:3 between two reads: retry until one read is a cache hit.
        seen_hit = False
        for _ in range(5):
            status, body, _ = shop.get("/products/3")
            assert status == 200
            product = _json(body)
            assert {k: v for k, v in product.items() if k != "cached"} == expected
            if product["cached"]:
                seen_hit = True
                break
        assert seen_hit, shop.output()

        assert shop.get("/products/999")[0] == 404
        assert [p["id"] for p in _json(shop.get("/search?q=mug")[1])] == [1, 4]

        status, body, _ = shop.post("/orders", {"product_id": 3, "quantity": 1})
        assert status == 201, shop.output()
        assert _json(body)["reserved"] is None
        assert shop.get("/fail")[0] == 500


def test_shop_memory_cache(tmp_path: Path) -> None:
    """SHOP_MEMORY_CACHE=1 without Redis (as in `make demo`): a miss, then hits until an order
    for the product removes it; the metric and measurement calls are no-ops without OTel."""
    env = {"SHOP_DATABASE_URL": f"sqlite:///{tmp_path / 'shop.db'}", "SHOP_REDIS_URL": "",
           "SHOP_INVENTORY_URL": "", "SHOP_MEMORY_CACHE": "1"}
    with AppProcess(SHOP_APP, env, free_port(), instrument=False) as shop:
        cached = [_json(shop.get("/products/2")[1])["cached"] for _ in range(3)]
        assert cached == [False, True, True]
        assert shop.post("/orders", {"product_id": 2, "quantity": 4})[0] == 201
        assert _json(shop.get("/products/2")[1])["cached"] is False
        assert _json(shop.get("/products/999")[1]) == {"error": "product not found"}
        output = shop.stop()
    assert shop.returncode == 0, output
    assert "Traceback" not in output, output
