"""Flow definitions: TOML files under ``templates/flows/``, validated into frozen types.

See docs/flows.md for the format. Any problem raises :class:`FlowError` naming the file,
the key path and what is wrong, so a bad flow stops start-up with a clear message.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

from bot.app.config import CouponDef
from bot.core.templating import TEMPLATES_DIR, Renderer, TemplateRenderError

__all__ = ["Branch", "Choice", "Flow", "FlowError", "FlowLibrary", "Step", "load_flows"]

FLOWS_DIR = TEMPLATES_DIR / "flows"
STEP_KINDS = ("choice", "text", "integer", "offer", "end")
ANSWER_KINDS = ("choice", "text", "integer")
OPS = ("==", "!=", ">", ">=", "<", "<=", "in")
BUTTON_PREFIX = "flow:"
OFFER_KEYS = (
    "coupon", "code_prefix", "title", "amount", "percent", "min_spend", "valid_days",
    "per_customer", "total_stock",
)  # fmt: skip


class FlowError(Exception):
    """A flow file problem: which file, which key, what is wrong."""

    def __init__(self, source: str, key: str, problem: str) -> None:
        self.source, self.key, self.problem = source, key, problem
        super().__init__(f"flow error in {source}: {key + ': ' if key else ''}{problem}")


def _localized(value: str | Mapping[object, object]) -> dict[str, str]:
    if isinstance(value, str):
        return {"zh-CN": value}
    return {str(k): str(v) for k, v in value.items()}


def pick(texts: Mapping[str, str], locale: str) -> str:
    """The text for ``locale``, falling back to zh-CN, then en, then any."""
    for candidate in (locale, "zh-CN", "en"):
        if candidate in texts:
            return texts[candidate]
    return next(iter(texts.values()), "")


@dataclass(frozen=True)
class Choice:
    """One accepted answer of a choice step: its value, labels and words that mean it."""

    value: str
    labels: dict[str, str]
    synonyms: tuple[str, ...] = ()

    def label(self, locale: str) -> str:
        return pick(self.labels, locale)

    def matches(self, text: str) -> bool:
        t = text.strip().lower()
        words = {self.value.lower(), *(w.lower() for w in self.synonyms)}
        words |= {label.lower() for label in self.labels.values()}
        return any(w and (t == w or w in t) for w in words)


@dataclass(frozen=True)
class Branch:
    """Go to ``next`` instead of the step's default when an answer compares true."""

    answer: str
    op: str
    value: object
    next: str

    def holds(self, answers: Mapping[str, object]) -> bool:
        if self.answer not in answers:
            return False
        got = answers[self.answer]
        try:
            if self.op == "in":
                return got in self.value  # type: ignore[operator]
            return {
                "==": got == self.value,
                "!=": got != self.value,
                ">": got > self.value,  # type: ignore[operator]
                ">=": got >= self.value,  # type: ignore[operator]
                "<": got < self.value,  # type: ignore[operator]
                "<=": got <= self.value,  # type: ignore[operator]
            }[self.op]
        except TypeError:
            return False


@dataclass(frozen=True)
class FollowUpRule:
    """Send ``template`` (rendered from the breakpoint) this long after the step's prompt."""

    after_hours: float
    template: str


@dataclass(frozen=True)
class OfferSpec:
    """The coupon an offer step issues: its definition (stored in ``coupon_definitions``
    by name when first issued), the code prefix and the title customers see."""

    code_prefix: str
    title: dict[str, str]
    coupon: CouponDef


@dataclass(frozen=True)
class Step:
    """One step: its prompt, what it accepts, where it goes next, and its follow-up."""

    id: str
    kind: str
    prompt: str
    title: dict[str, str] = field(default_factory=dict)
    reask: str | None = None
    save_as: str = ""
    choices: tuple[Choice, ...] = ()
    allow_text: bool = False
    pattern: str | None = None
    min_length: int = 1
    max_length: int = 200
    min: int | None = None
    max: int | None = None
    next: str | None = None
    branches: tuple[Branch, ...] = ()
    followup: FollowUpRule | None = None
    offer: OfferSpec | None = None

    @property
    def expects_answer(self) -> bool:
        return self.kind in ANSWER_KINDS

    def next_step(self, answers: Mapping[str, object]) -> str | None:
        for branch in self.branches:
            if branch.holds(answers):
                return branch.next
        return self.next


@dataclass(frozen=True)
class Flow:
    """A declarative conversation: steps, how it starts, and how it is resumed."""

    name: str
    title: dict[str, str]
    start: str
    steps: dict[str, Step]
    resume_template: str = "flow_resume"
    keywords: tuple[str, ...] = ()
    commands: tuple[str, ...] = ()
    source: str = ""

    @property
    def start_button(self) -> str:
        """The button data that starts this flow (campaign messages can carry it)."""
        return f"{BUTTON_PREFIX}{self.name}"

    def button_data(self, step: str, value: str) -> str:
        return f"{BUTTON_PREFIX}{self.name}:{step}:{value}"


class FlowLibrary:
    """All loaded flows, with lookups by trigger."""

    def __init__(self, flows: Iterable[Flow]) -> None:
        self.flows = {f.name: f for f in flows}
        self._keywords = [(k.lower(), f) for f in self.flows.values() for k in f.keywords]
        self._commands = {c.lower(): f for f in self.flows.values() for c in f.commands}

    def __getitem__(self, name: str) -> Flow:
        return self.flows[name]

    def get(self, name: str | None) -> Flow | None:
        return self.flows.get(name) if name else None

    def by_keyword(self, text: str) -> Flow | None:
        lowered = text.lower()
        return next((f for k, f in self._keywords if k and k in lowered), None)

    def by_command(self, command: str | None) -> Flow | None:
        return self._commands.get((command or "").lower())

    def by_button(self, data: str | None) -> tuple[Flow, str | None, str | None] | None:
        """(flow, step, value) for flow button data; step/value None for a start button."""
        if not data or not data.startswith(BUTTON_PREFIX):
            return None
        name, _, rest = data[len(BUTTON_PREFIX) :].partition(":")
        flow = self.flows.get(name)
        if flow is None:
            return None
        step, _, value = rest.partition(":")
        return flow, step or None, value or None


class _Reader:
    def __init__(self, source: str, renderer: Renderer | None) -> None:
        self.source, self.renderer = source, renderer

    def fail(self, key: str, problem: str) -> NoReturn:
        raise FlowError(self.source, key, problem)

    def get(self, table: Mapping, key: str, path: str, tp, default=..., required=False):
        if key not in table:
            if required or default is ...:
                self.fail(f"{path}{key}", "required key is missing")
            return default
        value = table[key]
        if tp is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
            self.fail(f"{path}{key}", f"expected {tp.__name__}, got {type(value).__name__}")
        return value

    def template(self, name: str, key: str) -> str:
        if self.renderer is not None:
            try:
                self.renderer.template_name(name, "zh-CN")
            except TemplateRenderError:
                self.fail(key, f"no message template {name!r} in templates/messages")
        return name

    def localized(self, table: Mapping, key: str, path: str, default: str) -> dict[str, str]:
        value = table.get(key, default)
        if not isinstance(value, str | dict):
            self.fail(f"{path}{key}", "expected a string or a table of locale = text")
        return _localized(value)

    def known_keys(self, table: Mapping, allowed: set[str], path: str) -> None:
        for key in table:
            if key not in allowed:
                self.fail(f"{path}{key}", f"unknown key (known: {', '.join(sorted(allowed))})")

    def step(self, raw: object, path: str) -> Step:
        if not isinstance(raw, dict):
            self.fail(path.rstrip("."), "expected a table")
        self.known_keys(
            raw,
            {
                "id", "kind", "prompt", "title", "reask", "save_as", "choices", "allow_text",
                "pattern", "min_length", "max_length", "min", "max", "next", "branches",
                "followup", "offer",
            },
            path,
        )  # fmt: skip
        sid = self.get(raw, "id", path, str, required=True)
        kind = self.get(raw, "kind", path, str, required=True)
        if kind not in STEP_KINDS:
            self.fail(f"{path}kind", f"{kind!r} is not one of {', '.join(STEP_KINDS)}")
        choices = []
        for i, c in enumerate(self.get(raw, "choices", path, list, [])):
            cpath = f"{path}choices[{i}]."
            if not isinstance(c, dict):
                self.fail(cpath.rstrip("."), "expected a table")
            self.known_keys(c, {"value", "label", "synonyms"}, cpath)
            value = self.get(c, "value", cpath, str, required=True)
            synonyms = self.get(c, "synonyms", cpath, list, [])
            choices.append(
                Choice(value, self.localized(c, "label", cpath, value), tuple(map(str, synonyms)))
            )
        if kind == "choice" and not choices:
            self.fail(f"{path}choices", "a choice step needs at least one choice")
        pattern = self.get(raw, "pattern", path, str, None)
        if pattern is not None:
            try:
                re.compile(pattern)
            except re.error as exc:
                self.fail(f"{path}pattern", f"not a valid regular expression: {exc}")
        branches = []
        for i, b in enumerate(self.get(raw, "branches", path, list, [])):
            bpath = f"{path}branches[{i}]."
            if not isinstance(b, dict):
                self.fail(bpath.rstrip("."), "expected a table")
            self.known_keys(b, {"answer", "op", "value", "next"}, bpath)
            op = self.get(b, "op", bpath, str, "==")
            if op not in OPS:
                self.fail(f"{bpath}op", f"{op!r} is not one of {' '.join(OPS)}")
            if "value" not in b:
                self.fail(f"{bpath}value", "required key is missing")
            branches.append(
                Branch(
                    self.get(b, "answer", bpath, str, required=True),
                    op,
                    b["value"],
                    self.get(b, "next", bpath, str, required=True),
                )
            )
        followup = None
        if "followup" in raw:
            f = self.get(raw, "followup", path, dict)
            fpath = f"{path}followup."
            self.known_keys(f, {"after_hours", "template"}, fpath)
            hours = self.get(f, "after_hours", fpath, float, required=True)
            if hours <= 0:
                self.fail(f"{fpath}after_hours", "must be greater than 0")
            followup = FollowUpRule(
                hours,
                self.template(
                    self.get(f, "template", fpath, str, required=True), f"{fpath}template"
                ),
            )
        offer = None
        if kind == "offer":
            o = self.get(raw, "offer", path, dict, required=True)
            opath = f"{path}offer."
            offer = self.offer(o, opath)
        reask = self.get(raw, "reask", path, str, None)
        return Step(
            id=sid,
            kind=kind,
            prompt=self.template(
                self.get(raw, "prompt", path, str, required=True), f"{path}prompt"
            ),
            title=self.localized(raw, "title", path, sid),
            reask=self.template(reask, f"{path}reask") if reask else None,
            save_as=self.get(raw, "save_as", path, str, sid),
            choices=tuple(choices),
            allow_text=self.get(raw, "allow_text", path, bool, False),
            pattern=pattern,
            min_length=self.get(raw, "min_length", path, int, 1),
            max_length=self.get(raw, "max_length", path, int, 200),
            min=self.get(raw, "min", path, int, None),
            max=self.get(raw, "max", path, int, None),
            next=self.get(raw, "next", path, str, None) or None,
            branches=tuple(branches),
            followup=followup,
            offer=offer,
        )

    def offer(self, o: Mapping, opath: str) -> OfferSpec:
        self.known_keys(o, set(OFFER_KEYS), opath)
        name = self.get(o, "coupon", opath, str, required=True)
        if not re.fullmatch(r"[a-z][a-z0-9_]{0,63}", name):
            self.fail(f"{opath}coupon", "use lowercase letters, digits and _ (at most 64)")
        prefix = self.get(o, "code_prefix", opath, str, "SIYU")
        if not re.fullmatch(r"[A-Z0-9]{1,8}", prefix):
            self.fail(f"{opath}code_prefix", "use 1-8 capital letters or digits")
        amount = self.get(o, "amount", opath, float, 0.0)
        percent = self.get(o, "percent", opath, int, 0)
        if amount < 0 or not 0 <= percent <= 100 or (amount > 0) == (percent > 0):
            self.fail(f"{opath}amount", "give either amount > 0 or percent (1-100)")
        numbers = {}
        for key, default in (("valid_days", 7), ("per_customer", 1), ("total_stock", 0)):
            numbers[key] = self.get(o, key, opath, int, default)
            if numbers[key] < (0 if key == "total_stock" else 1):
                self.fail(f"{opath}{key}", "must be greater than 0")
        min_spend = self.get(o, "min_spend", opath, float, 0.0)
        if min_spend < 0:
            self.fail(f"{opath}min_spend", "must be 0 or more")
        title = self.localized(o, "title", opath, name)
        coupon = CouponDef(
            name, pick(title, "zh-CN"), amount=amount, percent=percent, min_spend=min_spend,
            **numbers,
        )  # fmt: skip
        return OfferSpec(prefix, title, coupon)

    def flow(self, data: dict) -> Flow:
        self.known_keys(
            data, {"name", "title", "start", "resume_template", "triggers", "steps"}, ""
        )
        name = self.get(data, "name", "", str, required=True)
        if not re.fullmatch(r"[a-z][a-z0-9_]{0,40}", name):
            self.fail("name", "use lowercase letters, digits and _ (at most 41 characters)")
        triggers = self.get(data, "triggers", "", dict, {})
        self.known_keys(triggers, {"keywords", "commands"}, "triggers.")
        raw_steps = self.get(data, "steps", "", list, required=True)
        steps: dict[str, Step] = {}
        for i, raw in enumerate(raw_steps):
            step = self.step(raw, f"steps[{i}].")
            if step.id in steps:
                self.fail(f"steps[{i}].id", f"duplicate step id {step.id!r}")
            steps[step.id] = step
        for i, step in enumerate(steps.values()):
            for target, key in [(step.next, "next")] + [
                (b.next, f"branches[{j}].next") for j, b in enumerate(step.branches)
            ]:
                if target is not None and target not in steps:
                    self.fail(f"steps[{i}].{key}", f"unknown step {target!r}")
            if step.expects_answer and step.next is None and not step.branches:
                self.fail(f"steps[{i}].next", "a step that takes an answer needs a next step")
        start = self.get(data, "start", "", str, next(iter(steps), ""))
        if start not in steps:
            self.fail("start", f"unknown step {start!r}")
        resume = self.get(data, "resume_template", "", str, "flow_resume")
        return Flow(
            name=name,
            title=self.localized(data, "title", "", name),
            start=start,
            steps=steps,
            resume_template=self.template(resume, "resume_template"),
            keywords=tuple(str(k) for k in self.get(triggers, "keywords", "triggers.", list, [])),
            commands=tuple(
                str(c).lstrip("/") for c in self.get(triggers, "commands", "triggers.", list, [])
            ),
            source=self.source,
        )


def load_flow(path: Path, renderer: Renderer | None = None) -> Flow:
    """Read one flow file; raises FlowError."""
    source = str(path)
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise FlowError(source, "", f"cannot read the file ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise FlowError(source, "", f"not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise FlowError(source, "", "not valid UTF-8") from None
    return _Reader(source, renderer).flow(data)


def load_flows(
    directory: Path | str | None = None, renderer: Renderer | None = None
) -> FlowLibrary:
    """Every ``*.toml`` flow in ``directory`` (default ``templates/flows``)."""
    folder = Path(directory) if directory else FLOWS_DIR
    flows = [load_flow(p, renderer) for p in sorted(folder.glob("*.toml"))]
    seen: dict[str, str] = {}
    for f in flows:
        if f.name in seen:
            raise FlowError(f.source, "name", f"flow {f.name!r} is also defined in {seen[f.name]}")
        seen[f.name] = f.source
    return FlowLibrary(flows)
