"""The authorization table on Telegram: real admin rights from getChatAdministrators, the
real adapter against the fake Bot API. An admin of one group is not a manager anywhere else."""

from __future__ import annotations

import pytest

from bot.conversations.staff import create_staff
from bot.core.i18n import t
from tests.telegram_fake_api import TelegramHarness, group_chat, message, private_chat, user

pytestmark = pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning")

GROUP_A, GROUP_B = -1001111, -1002222
ADMIN_A = 9001  # admin of A only
AMY, BEA = 9002, 9003  # members of A and of B
MEI = 9004  # linked to the inbox manager "mei" through [telegram] relay_staff


@pytest.fixture
async def tg(config, sqlite_db, clock):
    with sqlite_db.transaction() as s:
        create_staff(s, "mei", "correct horse 42", role="manager", now=clock.now())
    async with TelegramHarness(
        config, sqlite_db, clock, relay_chat_id=-1009999, relay_staff=[f"{MEI}:mei"]
    ) as harness:
        harness.api.admins[GROUP_A] = [ADMIN_A]
        harness.api.admins[GROUP_B] = []
        await harness.push(message(group_chat(GROUP_A, "A 群"), user(AMY, "Amy"), "大家好"))
        await harness.push(message(group_chat(GROUP_B, "B 群"), user(BEA, "Bea"), "大家好"))
        yield harness


def in_a(text: str, reply_to: dict | None = None) -> dict:
    return message(
        group_chat(GROUP_A, "A 群"), user(ADMIN_A, "Boss", "en"), text, reply_to=reply_to
    )


async def test_an_admin_of_a_cannot_tag_or_edit_a_member_of_b(tg):
    for text in (f"/tag 黑名单 @{BEA}", f"/whois @{BEA}", f"/profile name 骗子 @{BEA}"):
        await tg.push(in_a(text))
    await tg.deliver()
    assert tg.api.texts(GROUP_A) == [
        t("authz.refused.member", "en", command="tag"),
        t("authz.refused.member", "en", command="whois"),
        t("authz.refused.managers", "en", command="profile"),
    ]
    bea = tg.profile(BEA)
    assert bea["tags"] == [] and bea["display_name"] == "Bea"


async def test_an_admin_of_a_tags_a_member_of_a(tg):
    await tg.push(in_a(f"/tag 高意向 @{AMY}"))
    await tg.deliver()
    assert [x["tag"] for x in tg.profile(AMY)["tags"]] == ["高意向"]


async def test_an_admin_of_a_is_a_customer_in_b(tg):
    b = group_chat(GROUP_B, "B 群")
    await tg.push(message(b, user(ADMIN_A, "Boss", "en"), "/announce 全场五折"))
    await tg.deliver()
    assert tg.api.texts(GROUP_B) == [t("authz.refused.group", "en", command="announce")]


async def test_an_admin_of_a_cannot_add_rules_or_segments(tg):
    await tg.push(in_a("/rule add keyword 投诉 退款"))
    await tg.push(in_a("/segment save all channel:telegram"))
    await tg.deliver()
    assert tg.api.texts(GROUP_A) == [
        t("authz.refused.managers", "en", command="rule"),
        t("authz.refused.managers", "en", command="segment"),
    ]


async def test_an_inbox_manager_linked_by_relay_staff_is_a_manager_in_chat(tg):
    await tg.push(message(private_chat(MEI), user(MEI, "Mei"), f"/profile city 杭州 @{BEA}"))
    await tg.deliver()
    assert tg.profile(BEA)["city"] == "杭州"
