"""``siyu customer forget``: a customer's personal data is erased everywhere, the anonymous
counts of reports stay the same, the erasure is audited, and the person writing again later
is a new customer."""

from __future__ import annotations

from dataclasses import asdict, replace

from sqlalchemy import func, inspect, select, text

from bot.app.cli import main
from bot.app.services import Services
from bot.marketing.campaigns.funnel import funnel
from bot.marketing.coupons import sync_definitions
from storage import repos
from storage.campaigns import Campaign
from storage.coupons import CouponCode
from storage.handoff import AuditEntry
from storage.models import Conversation, Customer, Identity, Interaction, OutboxMessage
from storage.orders import Order
from tests.support import SandboxHarness, run_jobs

NAME, PHONE, CITY = "林小梅", "13912345678", "苏州"
SAID = ("我想吃早餐", "我的电话是13912345678，晚上联系我", "我要投诉，房间太脏了")


def everything(db) -> str:
    parts = []
    with db.engine.connect() as conn:
        for table in inspect(conn).get_table_names():
            for row in conn.execute(text(f'SELECT * FROM "{table}"')):
                parts.extend(str(v) for v in row)
    return "\n".join(parts)


def where(db, value: str) -> list[str]:
    """The tables and columns that still hold ``value`` (for a readable failure)."""
    found = []
    with db.engine.connect() as conn:
        for table in inspect(conn).get_table_names():
            result = conn.execute(text(f'SELECT * FROM "{table}"'))
            for row in result:
                found += [f"{table}.{k}" for k, v in row._mapping.items() if value in str(v)]
    return found


def report_counts(db) -> dict:
    with db.sessions() as s:
        campaign = s.scalars(select(Campaign)).one()
        return {
            "funnel": [asdict(r) for r in funnel(s, campaign)],
            "interactions": s.scalar(select(func.count()).select_from(Interaction)),
            "interactions_by_kind": sorted(
                s.execute(select(Interaction.kind, func.count()).group_by(Interaction.kind)).all()
            ),
            "orders": s.execute(select(func.count(), func.sum(Order.amount_cents))).one(),
            "coupons": s.scalar(select(func.count()).select_from(CouponCode)),
            "outbox": sorted(
                s.execute(
                    select(OutboxMessage.purpose, func.count()).group_by(OutboxMessage.purpose)
                ).all()
            ),
            "customers": s.scalar(select(func.count()).select_from(Customer)),
        }


async def test_forget_erases_personal_data_keeps_counts_and_is_audited(
    config, db, clock, tmp_path, capsys
):
    config = config.replace(roles=replace(config.roles, managers=["sandbox:manager"]))
    h = SandboxHarness(config, db, clock)
    with db.transaction() as s:
        sync_definitions(s, config.coupons, clock.now())
    for said in SAID:
        await h.say("lin", said, name=NAME)
    await h.say("wang", "我想吃早餐", name="王大锤")
    cfg = tmp_path / "siyu.toml"
    cfg.write_text(f'[database]\nurl = "{db.url}"\n')
    profile = [f"phone={PHONE}", f"city={CITY}", "birthday=1990-05-01"]
    assert main(["customer", "set", "sandbox", "lin", *profile, "--config", str(cfg)]) == 0
    orders = tmp_path / "orders.csv"
    orders.write_text(
        "order_id,customer,phone,amount,currency,time,items\n"
        "L1,sandbox:lin,,199.00,CNY,2026-03-01T10:00:00+08:00,连衣裙 x1\n"
        "W1,sandbox:wang,,88.00,CNY,2026-03-01T11:00:00+08:00,\n"
    )
    assert main(["import", "orders", str(orders), "--config", str(cfg)]) == 0
    await h.say(
        "manager",
        '/campaign new spring segment="tag:早餐" template=morning_offer coupon=breakfast5 '
        'pilot=0 holdout=0 buttons="领券=claim"',
    )
    await h.say("manager", "/campaign launch spring")
    assert [
        j.payload["step"]
        for j in run_jobs(Services(db, h.runtime.config, h.runtime.renderer, clock))
    ] == ["launch"]
    await h.deliver()
    await h.sandbox.receive({"user_id": "lin", "chat_id": "lin", "button_data": "c:1:main:claim"})
    await h.deliver()
    with db.sessions() as s:
        old_id = repos.find_identity(s, "sandbox", "lin").customer_id
    before = everything(db)
    assert NAME in before and PHONE in before and SAID[2] in before  # the data was there
    counts = report_counts(db)
    capsys.readouterr()

    # Without --yes nothing happens; an unknown customer is an error.
    assert main(["customer", "forget", "sandbox", "lin", "--config", str(cfg)]) == 2
    assert "--yes" in capsys.readouterr().err
    assert NAME in everything(db)
    args = ["--yes", "--by", "privacy-officer", "--config", str(cfg)]
    assert main(["customer", "forget", "sandbox", "nobody", *args]) == 1
    assert main(["customer", "forget", "sandbox", "lin", *args]) == 0
    out = capsys.readouterr().out
    assert f"客户 #{old_id} 的个人信息已删除" in out and "cli:privacy-officer" in out

    after = everything(db)
    for secret in (NAME, PHONE, CITY, "1990-05-01", *SAID[1:], "房间太脏"):
        assert secret not in after, f"{secret!r} is still stored: {where(db, secret)}"
    assert "王大锤" in after  # other customers are untouched
    with db.sessions() as s:
        assert s.scalar(select(Identity).where(Identity.external_id == "lin")) is None
        ident = s.scalars(select(Identity).where(Identity.customer_id == old_id)).one()
        assert ident.external_id.startswith("forgotten-") and ident.unreachable
        assert not s.scalars(select(Conversation).where(Conversation.user_id == "lin")).all()
        assert not s.scalars(select(OutboxMessage).where(OutboxMessage.user_id == "lin")).all()
        assert not s.execute(
            text("SELECT 1 FROM sandbox_messages WHERE chat_id = 'lin' OR user_id = 'lin'")
        ).all()
        entry = s.scalars(select(AuditEntry).where(AuditEntry.action == "customer.forget")).one()
        assert entry.actor == "cli:privacy-officer"
        assert entry.detail == {"customer_id": old_id, "identities": 1}
        assert entry.created_at is not None
    assert report_counts(db) == counts  # reports count the same

    # Writing again later: a new person, knowing nothing of the old one.
    await h.say("lin", "你好")
    with db.sessions() as s:
        new = repos.find_identity(s, "sandbox", "lin")
        assert new.customer_id != old_id
        customer = s.get(Customer, new.customer_id)
        assert (customer.phone, customer.city, customer.birthday) == (None, None, None)
        assert repos.tags_of(s, new.customer_id, clock.now()) == []
