"""``siyu sop``, ``siyu faq`` and ``siyu mod log`` as subprocesses, on the same functions
as the chat commands."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from storage import repos
from storage.db import Database

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def cli(tmp_path: Path, sqlite_url: str):
    db = Database(sqlite_url)
    db.migrate()
    path = tmp_path / "siyu.toml"
    path.write_text(f'[database]\nurl = "{sqlite_url}"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIYU_")}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "bot.app.cli", *args, "--config", str(path)],
            cwd=ROOT,
            env=env | {"PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            timeout=60,
        )

    yield db, run
    db.close()


def test_sop_plans_from_the_shell(cli):
    db, run = cli
    with db.transaction() as s:
        repos.ensure_group(s, "telegram", "-100777", "会员一群")
    made = run(
        "sop", "add", "morning", "daily", "07:30", "to=title:会员*", "text=早上好 {{ group }}"
    )
    assert made.returncode == 0, made.stderr
    assert made.stdout.strip() == "已创建群发计划「morning」：daily 07:30，当前匹配 1 个群。"
    refused = run("sop", "add", "oa", "daily", "07:30", "to=all", "channel=wechat", "text=hi")
    assert refused.returncode == 1
    assert refused.stderr.strip() == "siyu: 公众号没有群：群发计划只能发到 Telegram 群、企业微信客户群或沙盒群。"  # fmt: skip
    assert run("sop", "tag", "telegram", "-100777", "周末").returncode == 0
    assert run("sop", "pause", "morning").stdout.strip() == "已暂停群发计划「morning」。"
    listing = run("sop", "list").stdout.splitlines()
    assert listing == [
        "名称\t时间\t目标\t状态\t下次",
        "morning\tdaily 07:30\ttitle:会员*\t已暂停\t-",
    ]
    shown = run("sop", "show", "morning", "--json")
    assert shown.stdout.strip() == '{"plan": "morning", "groups": []}'
    assert run("sop", "del", "morning").returncode == 0
    assert run("sop", "show", "morning").stderr.strip() == "siyu: 没有名为「morning」的群发计划。"


def test_faq_and_moderation_log_from_the_shell(cli):
    _, run = cli
    added = run("faq", "add", "怎么退货", "keywords=退货,退换", "--answer", "7 天内可退 || Within 7 days")  # fmt: skip
    assert added.stdout.strip() == "已添加常见问题 #1：怎么退货", added.stderr
    rows = run("faq", "list").stdout.splitlines()
    assert rows[1] == "1\t怎么退货\t退货,退换\teverywhere\tmention\t600\t0"
    assert run("faq", "add", "没有答案").returncode == 1
    assert run("faq", "del", "1").stdout.strip() == "已删除常见问题 #1：怎么退货"
    assert run("mod", "log").stdout.strip() == "还没有管理记录。"
    bad = run("mod", "log", "--limit", "0")
    assert bad.returncode == 1 and "--limit 需是 1 到 1000 之间的整数" in bad.stderr
