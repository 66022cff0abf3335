"""Benchmark: keyword tagging, messages/s against 1,000 and 10,000 rules vs a naive loop.

    .venv/bin/python bench/tagging.py [--rules 1000 10000] [--messages 2000]

Rules are random 2-4 character Chinese keywords (plus some English ones and exclusions);
messages are ~200 random Chinese characters with a few planted keywords. The naive loop is
``any(k in text for k in rule.keywords)`` per rule. Both must find the same rules.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.app.config import KeywordRule
from bot.customers.tagging import KeywordMatcher

CJK = [chr(c) for c in range(0x4E00, 0x4E00 + 3000)]


def make_rules(n: int, rnd: random.Random) -> list[KeywordRule]:
    rules = []
    for i in range(n):
        words = ["".join(rnd.choice(CJK) for _ in range(rnd.randint(2, 4))) for _ in range(3)]
        if i % 10 == 0:
            words.append(f"brand{i}")
        exclude = ["".join(rnd.choice(CJK) for _ in range(3))] if i % 5 == 0 else []
        rules.append(KeywordRule(tag=f"tag{i}", keywords=words, exclude=exclude))
    return rules


def make_messages(n: int, rules: list[KeywordRule], rnd: random.Random) -> list[str]:
    messages = []
    for _ in range(n):
        chars = [rnd.choice(CJK) for _ in range(200)]
        for _ in range(3):
            word = rnd.choice(rnd.choice(rules).keywords)
            at = rnd.randrange(0, 200)
            chars[at:at] = list(word)
        messages.append("".join(chars))
    return messages


def naive(rules: list[KeywordRule], text: str) -> list[str]:
    low = text.lower()
    return [
        r.tag
        for r in rules
        if any(k.lower() in low for k in r.keywords)
        and not any(x.lower() in low for x in r.exclude)
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rules", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--messages", type=int, default=2000)
    args = parser.parse_args()
    rnd = random.Random(5)
    print(f"{'rules':>6}  {'build s':>8}  {'matcher msg/s':>14}  {'naive msg/s':>12}  speed-up")
    for n in args.rules:
        rules = make_rules(n, rnd)
        messages = make_messages(args.messages, rules, rnd)
        started = time.perf_counter()
        matcher = KeywordMatcher(rules)
        build = time.perf_counter() - started
        started = time.perf_counter()
        fast = [[h.tag for h in matcher.match(m)] for m in messages]
        fast_rate = len(messages) / (time.perf_counter() - started)
        sample = messages[: max(50, len(messages) // (10 if n > 2000 else 1))]
        started = time.perf_counter()
        slow = [naive(rules, m) for m in sample]
        slow_rate = len(sample) / (time.perf_counter() - started)
        assert slow == fast[: len(sample)], "matcher and naive loop disagree"
        print(
            f"{n:>6}  {build:>8.3f}  {fast_rate:>14,.0f}  {slow_rate:>12,.0f}  "
            f"{fast_rate / slow_rate:>6.0f}×"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
