"""Money amounts are validated (range, digits, at most two decimals) before any arithmetic,
wherever they come in: the coupon API, the orders API and CSV, the inbox redeem form and
/redeem. Hostile amounts are a clear refusal at once and the server keeps answering."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import httpx
import pytest

from bot.app.assembly import build
from bot.app.cli import main as cli_main
from bot.core.amounts import AmountError, parse_amount
from tests.support import LiveServer, SandboxHarness
from tests.test_inbox_web import add_staff, login

HOSTILE = ["1e300000", "1e9999999", "NaN", "-1", "10^30", "Infinity", "12.345", "9" * 40]
API_KEY = "amount-test-key-123"


@pytest.mark.parametrize(
    ("raw", "cents"),
    [("35.00", 3500), ("35", 3500), (35, 3500), (35.5, 3550), ("0.5", 50), (" 12.30 ", 1230)],
)
def test_plain_amounts_are_taken_in_cents(raw, cents):
    assert parse_amount(raw) == cents


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("1e300000", "not_number"),
        ("1e9999999", "not_number"),
        ("NaN", "not_number"),
        (float("nan"), "not_number"),
        (float("inf"), "not_number"),
        (1e300, "not_number"),
        ("-1", "negative"),
        (-1, "negative"),
        ("10^30", "not_number"),
        (10**30, "too_large"),
        ("9" * 40, "too_large"),
        ("100000000.01", "too_large"),
        ("12.345", "decimals"),
        ("１２", "not_number"),
        (True, "not_number"),
        ("", "required"),
        (None, "required"),
    ],
)
def test_other_amounts_are_refused_with_the_reason(raw, why):
    with pytest.raises(AmountError) as refused:
        parse_amount(raw)
    assert refused.value.key == why
    assert refused.value.message("zh-CN") != refused.value.message("en")


def test_hostile_amounts_get_a_400_at_once_while_healthz_keeps_answering(config, sqlite_db, clock):
    cfg = config.replace(
        database=replace(config.database, url=sqlite_db.url),
        api=replace(config.api, key=API_KEY),
    )
    app = build(cfg, db=sqlite_db, clock=clock)
    headers = {"Authorization": f"Bearer {API_KEY}", "Accept-Language": "en"}
    answers: list[tuple[str, int, str]] = []
    done = threading.Event()

    def attack(base: str) -> None:
        with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
            for raw in HOSTILE * 3:
                r = client.post("/api/coupons/redeem", json={"code": "ABCD-EFGH", "amount": raw})
                answers.append(("coupon", r.status_code, r.json()["error"]))
                order = {
                    "order_id": "o-1",
                    "customer": "sandbox:u1",
                    "amount": raw,
                    "time": "2026-03-01",
                }
                r = client.post("/api/orders", json={"orders": [order] * 50})
                answers.append(("orders", r.status_code, r.json()["rejected"][0]["error"]))
            raw_json = '{"code": "ABCD-EFGH", "amount": 1e300000}'  # a JSON number: inf
            r = client.post(
                "/api/coupons/redeem",
                content=raw_json,
                headers={"Content-Type": "application/json"},
            )
            answers.append(("coupon-number", r.status_code, r.json()["error"]))
            digits = '{"code": "ABCD-EFGH", "amount": 1' + "0" * 5000 + "}"  # over int's limit
            r = client.post(
                "/api/coupons/redeem", content=digits, headers={"Content-Type": "application/json"}
            )
            answers.append(("coupon-digits", r.status_code, r.json()["error"]))
        done.set()

    with LiveServer(app) as server:
        attacker = threading.Thread(target=attack, args=(server.url,))
        attacker.start()
        slowest = 0.0
        with httpx.Client(base_url=server.url, timeout=5) as client:
            while not done.is_set():
                started = time.monotonic()
                assert client.get("/healthz").status_code == 200
                slowest = max(slowest, time.monotonic() - started)
                time.sleep(0.02)
        attacker.join()
    assert slowest < 1.0, f"/healthz waited {slowest:.2f}s"
    assert len(answers) == len(HOSTILE) * 3 * 2 + 2
    where, status, error = answers.pop()  # a 5,000-digit JSON number, refused by the parser
    assert (where, status) == ("coupon-digits", 400) and "40" in error, error
    where, status, error = answers.pop()  # 1e300000 in the JSON itself: not finite
    assert (where, status) == ("coupon-number", 400), error
    for where, status, error in answers:
        assert status == (422 if where == "orders" else 400), (where, status, error)
        assert error.startswith("'amount'"), error
    assert {e for _, _, e in answers if "1e9999" in e} == {"'amount' '1e9999999' is not a number"}
    assert "'amount' must be 0 or more, got '-1'" in {e for _, _, e in answers}
    assert "'amount' '12.345' has more than 2 decimals" in {e for _, _, e in answers}


def test_orders_csv_reports_each_hostile_amount_by_line(tmp_path, sqlite_url, capsys):
    rows = "".join(f"H{i},sandbox:u1,,{raw},CNY,2026-03-01,\n" for i, raw in enumerate(HOSTILE))
    path = tmp_path / "orders.csv"
    path.write_text("order_id,customer,phone,amount,currency,time,items\n" + rows)
    cfg = tmp_path / "siyu.toml"
    cfg.write_text(f'[database]\nurl = "{sqlite_url}"\n')
    assert cli_main(["migrate", "--config", str(cfg)]) == 0
    assert cli_main(["import", "orders", str(path), "--config", str(cfg)]) == 1
    err = capsys.readouterr().err
    assert f"{path}:2: rejected (order H0): 'amount' '1e300000' is not a number" in err
    assert f"{path}:3: rejected (order H1): 'amount' '1e9999999' is not a number" in err
    assert f"{path}:5: rejected (order H3): 'amount' must be 0 or more, got '-1'" in err
    assert f"{path}:9: rejected (order H7): 'amount' '{'9' * 24}…' is over the limit" in err


async def test_inbox_redeem_form_refuses_a_hostile_amount(config, sqlite_db, clock):
    h = SandboxHarness(config, sqlite_db, clock)
    add_staff(sqlite_db, clock, "alice")
    alice, token = login(h, "alice")
    for raw in ("1e300000", "1e9999999", "NaN", "-1", "10^30"):
        r = alice.post("/inbox/redeem", data={"csrf": token, "code": "ABCD", "amount": raw})
        assert r.status_code == 303
        page = alice.get("/inbox").text
        assert "金额须为数字，例如 35.00" in page  # in alice's language (zh-CN)
        assert f"&#39;{raw}&#39;" in page or f"'{raw}'" in page


async def test_redeem_command_refuses_a_hostile_amount_in_the_readers_language(
    config, sqlite_db, clock
):
    config = config.replace(roles=replace(config.roles, managers=["sandbox:boss"]))
    h = SandboxHarness(config, sqlite_db, clock)
    await h.say("boss", "/redeem ABCD-EFGH-JKLM 1e9999999")
    await h.deliver()
    said = await h.bot_messages("boss")
    assert said[0] == "金额 '1e9999999' 不是数字（请写成 35.00 这样的形式）"
    assert "/redeem" in said[1]
