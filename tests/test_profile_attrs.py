"""Profile attributes come in by CLI, API, CSV and chat, validated the same way, and the
birthday scenario and segments see them."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from bot.app.cli import main
from bot.core.clock import FakeClock
from bot.customers.attributes import ProfileInputError, validate_attributes
from bot.customers.segments import count_segment
from bot.marketing.scenarios import sync_scenarios, tick
from storage.campaigns import Scenario
from storage.db import Database
from storage.models import Customer, Identity, OutboxMessage
from storage.repos import find_identity
from tests.campaign_support import services
from tests.support import SandboxHarness

TODAY = date(2026, 3, 6)


def test_attributes_are_normalized():
    assert validate_attributes(
        {
            "name": " 小美 ",
            "phone": "+86 138-0000-0001",
            "birthday": "1990-05-17",
            "city": "杭州",
            "locale": "EN",
            "tz": "Europe/London",
        },
        today=TODAY,
    ) == {
        "name": "小美",
        "phone": "13800000001",
        "birthday": date(1990, 5, 17),
        "city": "杭州",
        "locale": "en",
        "timezone": "Europe/London",
    }
    assert validate_attributes({"birthday": "02-29"}, today=TODAY) == {
        "birthday": date(1604, 2, 29)
    }
    assert validate_attributes({"city": "", "phone": None}, today=TODAY) == {
        "city": None,
        "phone": None,
    }
    assert validate_attributes({"city": ""}, today=TODAY, empty_clears=False) == {}


@pytest.mark.parametrize(
    ("attrs", "message"),
    [
        ({"phone": "12ab"}, "'phone' '12ab' is not a phone number (5-15 digits, optional +86)"),
        ({"birthday": "17/05/1990"}, "'birthday' '17/05/1990' must be YYYY-MM-DD or MM-DD"),
        ({"birthday": "1990-02-30"}, "'birthday' '1990-02-30' is not a real date"),
        ({"birthday": "2030-01-01"}, "'birthday' '2030-01-01' is in the future"),
        ({"birthday": "13-01"}, "'birthday' '13-01' is not a real date"),
        ({"timezone": "Mars/Olympus"}, "'timezone' 'Mars/Olympus' is not an IANA time zone"),
        ({"locale": "fr"}, "'locale' 'fr' is not supported (one of zh-CN, en)"),
        ({"locale": ""}, "'locale' cannot be empty"),
        ({"age": "30"}, "unknown attribute 'age' (known: name, phone, birthday, city, locale"),
        ({"city": "x" * 65}, "'city' is longer than 64 characters"),
        ({"city": 42}, "'city' must be text, got int"),
    ],
)
def test_bad_attributes_are_refused_precisely(attrs, message):
    with pytest.raises(ProfileInputError) as info:
        validate_attributes(attrs, today=TODAY)
    assert str(info.value).startswith(message)


@pytest.fixture
def cli_db(tmp_path: Path, db_url: str):
    db = Database(db_url)
    db.migrate()
    with db.transaction() as s:
        alice = Customer(display_name="Alice", phone="13800000001")
        bob = Customer(display_name="Bob", phone="13900000002")
        s.add_all([alice, bob])
        s.flush()
        s.add(Identity(customer_id=alice.id, channel="sandbox", external_id="alice"))
    config = tmp_path / "siyu.toml"
    config.write_text(f'[database]\nurl = "{db_url}"\n')
    yield db, str(config)
    db.close()


def test_customer_set_cli_validates_and_updates(cli_db, capsys):
    _, config = cli_db
    args = ["customer", "set", "sandbox", "alice", "--config", config]
    assert main([*args[:4], "city=杭州", "birthday=05-17", "tz=Asia/Tokyo", *args[4:]]) == 0
    assert capsys.readouterr().out.strip() == (
        "customer #1: set city=杭州, birthday=05-17, timezone=Asia/Tokyo"
    )
    assert main([*args[:4], "city=杭州", *args[4:]]) == 0
    assert capsys.readouterr().out.strip().endswith(": nothing changed")
    for pair, message in (
        ("birthday=1990-13-01", "siyu: 'birthday' '1990-13-01' is not a real date"),
        ("timezone=Asia/Hangzhou", "siyu: 'timezone' 'Asia/Hangzhou' is not an IANA time zone"),
        ("city", "siyu: expected key=value, got 'city'"),
        ("locale=de", "siyu: 'locale' 'de' is not supported (one of zh-CN, en)"),
    ):
        assert main([*args[:4], pair, *args[4:]]) == 2
        assert capsys.readouterr().err.startswith(message)
    assert main(["customer", "set", "sandbox", "nobody", "city=x", "--config", config]) == 1
    assert "no customer with sandbox id 'nobody'" in capsys.readouterr().err
    assert main([*args[:4], "phone=139 0000 0002", *args[4:]]) == 1  # Bob's phone
    assert "phone 13900000002 belongs to customer #2" in capsys.readouterr().err
    assert main([*args[:4], "city=", *args[4:]]) == 0
    capsys.readouterr()
    assert main(["customer", "show", "sandbox", "alice", "--json", "--config", config]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["city"], shown["birthday"], shown["timezone"]) == (None, "05-17", "Asia/Tokyo")
    assert shown["phone"] == "13800000001"


CUSTOMERS_CSV = """customer,phone,name,birthday,city,locale,timezone
sandbox:alice,,,1990-05-17,杭州,,
sandbox:carol,13700000003,Carol,,上海,en,Europe/London
,13900000002,,,北京,,
,13600000006,Dan,07-01,,,
sandbox:erin,,,1990-02-30,,,
telegram,,,,,,
sandbox:frank,,,,,fr,
sandbox:carol,,,,深圳,,
,,,,杭州,,
sandbox:gina,13900000002,,,,,
"""


def test_customers_csv_keeps_good_rows_reports_bad_ones_and_reimport_is_a_no_op(
    cli_db, tmp_path, capsys, monkeypatch
):
    db, config = cli_db
    path = tmp_path / "customers.csv"
    path.write_text(CUSTOMERS_CSV, encoding="utf-8")
    assert main(["import", "customers", str(path), "--config", config]) == 1
    out, err = capsys.readouterr()
    assert out.strip() == f"{path}: 2 created, 3 updated, 0 unchanged, 5 rejected"
    assert [line for line in err.splitlines() if "rejected" in line] == [
        f"{path}:6: rejected (sandbox:erin): birthday '1990-02-30' is not a real date",
        f"{path}:7: rejected (telegram): 'customer' 'telegram' must be '<channel>:<user id>' "
        "(channels: sandbox, telegram, wechat, wecom)",
        f"{path}:8: rejected (sandbox:frank): language 'fr' is not supported (one of zh-CN, en)",
        f"{path}:9: rejected (sandbox:carol): the same customer as line 3 (one row each)",
        f"{path}:10: rejected: give 'customer' (<channel>:<user id>) or 'phone'",
    ]
    with db.sessions() as s:
        alice = find_identity(s, "sandbox", "alice").customer
        assert (alice.birthday, alice.city, alice.phone) == (
            date(1990, 5, 17),
            "杭州",
            "13800000001",
        )
        carol = find_identity(s, "sandbox", "carol").customer
        assert (carol.display_name, carol.phone, carol.locale, carol.timezone) == (
            "Carol",
            "13700000003",
            "en",
            "Europe/London",
        )
        bob = s.scalar(select(Customer).where(Customer.display_name == "Bob"))
        assert bob.city == "北京"
        gina = find_identity(s, "sandbox", "gina")  # found by Bob's phone: linked to Bob
        assert gina.customer_id == bob.id
        dan = s.scalar(select(Customer).where(Customer.phone == "13600000006"))
        assert (dan.display_name, dan.birthday) == ("Dan", date(1604, 7, 1))
    monkeypatch.setenv("SIYU_LANG", "zh_CN")  # the reasons follow the CLI reader's locale
    assert main(["import", "customers", str(path), "--config", config]) == 1
    out, err = capsys.readouterr()
    assert out.strip() == f"{path}：新建 0 位，更新 0 位，未变 5 位，拒绝 5 行"
    assert [line for line in err.splitlines() if "已拒绝" in line][::3] == [
        f"{path}:6：已拒绝（sandbox:erin）：生日“1990-02-30”不是真实存在的日期",
        f"{path}:9：已拒绝（sandbox:carol）：与第 3 行是同一位客户（每位客户只能一行）",
    ]


def test_customers_csv_with_unknown_columns_is_refused_whole(cli_db, tmp_path, capsys):
    _, config = cli_db
    path = tmp_path / "c.csv"
    path.write_text("customer,brithday\nsandbox:alice,05-17\n", encoding="utf-8")
    assert main(["import", "customers", str(path), "--config", config]) == 2
    assert "unknown column(s) 'brithday'" in capsys.readouterr().err


@pytest.fixture
def api(config, sqlite_db, clock):
    config = config.replace(api=replace(config.api, key="s3cret"))
    harness = SandboxHarness(config, sqlite_db, clock)
    with sqlite_db.transaction() as s:
        bob = Customer(display_name="Bob", phone="13900000002")
        s.add(bob)
    transport = httpx.ASGITransport(app=harness.app.asgi)
    client = httpx.AsyncClient(transport=transport, base_url="http://siyu.test")
    return client, harness


AUTH = {"Authorization": "Bearer s3cret"}


async def test_api_upserts_customers_idempotently_and_refuses_bad_payloads(api, clock):
    client, harness = api
    one = {"customer": "sandbox:alice", "name": "Alice", "birthday": "03-06", "city": "杭州"}
    r = await client.post("/api/customers", json=one)
    assert r.status_code == 401
    r = await client.post("/api/customers", json=one, headers=AUTH)
    assert r.status_code == 200
    body = r.json()
    assert (body["created"], body["updated"], body["unchanged"]) == (1, 0, 0)
    alice_id = body["customers"][0]["customer_id"]
    r = await client.post("/api/customers", json=one, headers=AUTH)
    assert (r.status_code, r.json()["unchanged"]) == (200, 1)

    batch = {
        "customers": [
            {"phone": "+86 139 0000 0002", "city": "杭州"},  # Bob, by phone
            {"channel": "telegram", "user_id": 4242, "phone": "13900000002"},  # linked to Bob
            {"customer": "sandbox:alice", "phone": "13900000002"},  # Bob's phone: conflict
            {"customer": "sandbox:alice", "timezone": "Moon/Base"},
            {"customer": "sandbox:alice", "shoe_size": "42"},
            {"city": "杭州"},
            "alice",
        ]
    }
    r = await client.post("/api/customers", json=batch, headers=AUTH | {"Accept-Language": "en"})
    assert r.status_code == 422
    body = r.json()
    assert [(c["index"], c["matched_by"], c["changed"]) for c in body["customers"]] == [
        (0, "phone", ["city"]),
        (1, "phone", ["identity"]),
    ]
    assert [(e["index"], e["error"]) for e in body["rejected"]] == [
        (
            2,
            f"phone 13900000002 belongs to customer #1, sandbox:alice to customer #{alice_id} "
            f"(merge them first: siyu customer merge 1 {alice_id})",
        ),
        (3, "'Moon/Base' is not an IANA time zone (e.g. Asia/Shanghai, Europe/London)"),
        (4, "unknown attribute 'shoe_size' (known: name, phone, birthday, city, locale, timezone)"),
        (5, "give 'customer' (<channel>:<user id>), 'channel' + 'user_id', or 'phone'"),
        (6, "a customer must be a JSON object"),
    ]
    assert [e["code"] for e in body["rejected"]] == [
        "intake.customer.conflict",
        "customer.error.timezone",
        "customer.error.unknown_attribute",
        "intake.customer.who_required_json",
        "intake.customer.not_object",
    ]
    for payload, status, message in (
        (b"{nope", 400, "JSON"),
        (b"[1]", 400, "expected a customer object"),
        (b'{"customers": {}}', 400, "'customers' must be a list"),
        (b'{"customers": []}', 400, "'customers' is empty"),
    ):
        r = await client.post(
            "/api/customers", content=payload, headers=AUTH | {"Accept-Language": "en"}
        )
        assert r.status_code == status and message in r.json()["error"]
    with harness.db.sessions() as s:
        assert find_identity(s, "telegram", "4242").customer_id == 1
        now = clock.now()
        config = harness.runtime.config
        assert count_segment(s, "city:杭州", config=config, now=now) == 2


async def test_birthday_given_by_the_api_puts_the_customer_in_the_birthday_audience(api):
    client, harness = api
    people = [
        {"customer": "sandbox:alice", "birthday": "1990-05-17"},
        {"customer": "sandbox:ldn", "birthday": "05-17", "timezone": "Europe/London"},
        {"customer": "sandbox:carl", "birthday": "1985-05-18"},
        {"customer": "sandbox:dora"},
    ]
    r = await client.post("/api/customers", json={"customers": people}, headers=AUTH)
    assert r.status_code == 200, r.text
    db, config = harness.db, harness.runtime.config
    clock = FakeClock(datetime(2026, 5, 17, 2, 30, tzinfo=UTC))  # 10:30 in Shanghai
    svc = services(db, config, clock)
    with db.transaction() as s:
        sync_scenarios(s, config.scenarios.definitions, clock.now())
        birthday = s.scalars(select(Scenario).where(Scenario.name == "birthday")).one().id

    def audience() -> list[str]:
        with db.sessions() as s:
            return list(
                s.scalars(
                    select(OutboxMessage.user_id)
                    .where(OutboxMessage.idempotency_key.like("scenario:birthday:%"))
                    .order_by(OutboxMessage.id)
                )
            )

    assert tick(svc, birthday).get("Asia/Shanghai") == "sent"
    assert audience() == ["alice"]
    clock.set(datetime(2026, 5, 17, 9, 30, tzinfo=UTC))  # 10:30 in London (BST)
    assert tick(svc, birthday).get("Europe/London") == "sent"
    assert audience() == ["alice", "ldn"]


async def test_manager_sets_and_shows_a_profile_by_chat(api):
    _, harness = api
    await harness.say("c1", "你好", name="小美")
    await harness.say("manager", "/profile city 杭州 西湖区 @c1")
    await harness.say("manager", "/profile birthday 1990-02-30 @c1")
    await harness.say("manager", "/profile phone 138 0000 0009 @c1")
    await harness.say("manager", "/profile @c1")
    await harness.say("manager", "/profile city")
    await harness.say("c1", "/profile city 上海 @c1")  # not a manager: not run
    await harness.say("manager", "/profile @c1", chat="group-1")
    await harness.deliver()
    # asked in a group: the group reads a notice, the manager gets the card privately
    assert (await harness.bot_messages("group-1")) == [
        "🔒 /profile 的结果含个人或经营数据，已私信发给您。没收到？请先私聊我发送 /start。"
    ]
    replies = await harness.bot_messages("manager")
    assert replies[5].startswith("小美（ID c1）\n手机：138****0009 · ")
    assert replies[0] == "小美：城市已设为 杭州 西湖区。"
    assert replies[1] == "操作未完成：生日“1990-02-30”不是真实存在的日期"  # in Chinese
    assert replies[2] == "小美：手机已设为 13800000009。"  # a private chat: in full
    assert replies[3].startswith("小美（ID c1）\n手机：13800000009 · 生日：- · 城市：杭州 西湖区")
    assert replies[4].startswith("操作未完成：用法：回复某位成员的消息发送 /profile [资料项 值]")
    with harness.db.sessions() as s:
        assert find_identity(s, "sandbox", "c1").customer.city == "杭州 西湖区"


async def test_a_29_february_birthday_is_celebrated_on_the_28th_in_common_years(api):
    client, harness = api
    people = [
        {"customer": "sandbox:leap", "birthday": "02-29"},
        {"customer": "sandbox:feb28", "birthday": "1990-02-28"},
        {"customer": "sandbox:mar1", "birthday": "1990-03-01"},
    ]
    r = await client.post("/api/customers", json={"customers": people}, headers=AUTH)
    assert r.status_code == 200, r.text
    db, config = harness.db, harness.runtime.config
    clock = FakeClock(datetime(2027, 2, 28, 2, 30, tzinfo=UTC))  # 10:30 in Shanghai, 2027
    svc = services(db, config, clock)
    with db.transaction() as s:
        sync_scenarios(s, config.scenarios.definitions, clock.now())
        birthday = s.scalars(select(Scenario).where(Scenario.name == "birthday")).one().id
    tick(svc, birthday)
    with db.sessions() as s:
        users = s.scalars(select(OutboxMessage.user_id).order_by(OutboxMessage.user_id)).all()
    assert users == ["feb28", "leap"]
