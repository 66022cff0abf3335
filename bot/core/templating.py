"""Customer-facing text, rendered by name from ``templates/messages`` in one place.

Templates are ``<name>.<locale>.j2`` files (zh-CN first, English second). The environment
is Jinja2's sandbox with strict undefined variables, because managers edit templates: a
template may not reach into Python objects, and a missing variable is an error, not an
empty string. Every render has a budget of time, loop iterations and size
(bot/core/template_budget.py): the shipped templates a generous one, text typed in chat a
tight one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2

from bot.core.template_budget import USER_BUDGET, BudgetedEnvironment, RenderBudget, metered

__all__ = ["TEMPLATES_DIR", "Renderer", "TemplateRenderError"]

TEMPLATES_DIR = Path(__file__).resolve().parents[2] / "templates"
FALLBACK_LOCALES = ("zh-CN", "en")


class TemplateRenderError(Exception):
    """A template is missing or failed to render; says which and why."""

    def __init__(self, name: str, locale: str, problem: str) -> None:
        self.name, self.locale, self.problem = name, locale, problem
        super().__init__(f"template {name!r} ({locale}): {problem}")


class Renderer:
    """Renders message templates by name and locale."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory or TEMPLATES_DIR / "messages"
        self.env = BudgetedEnvironment(
            loader=jinja2.FileSystemLoader(str(self.directory)),
            undefined=jinja2.StrictUndefined,
            autoescape=False,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=False,
            auto_reload=False,
        )

    def template_name(self, name: str, locale: str) -> tuple[str, str]:
        """The file used for ``name`` in ``locale``, falling back zh-CN then en."""
        for candidate in (locale, *FALLBACK_LOCALES):
            filename = f"{name}.{candidate}.j2"
            if (self.directory / filename).is_file():
                return filename, candidate
        raise TemplateRenderError(name, locale, "no such template")

    def render(self, name: str, locale: str, /, **variables: Any) -> str:
        filename, used = self.template_name(name, locale)
        try:
            return self.env.get_template(filename).render(**variables).strip()
        except jinja2.TemplateError as exc:
            raise TemplateRenderError(name, used, f"{type(exc).__name__}: {exc}") from exc

    def render_string(
        self, source: str, /, *, budget: RenderBudget = USER_BUDGET, **variables: Any
    ) -> str:
        """Render text a manager typed (e.g. a group welcome) in the same sandbox, compiled
        and rendered under ``budget`` (bot/core/template_budget.py)."""
        try:
            with metered(budget):
                return self.env.from_string(source).render(**variables).strip()
        except Exception as exc:  # a typed template may fail in any way: report, never crash
            raise TemplateRenderError("<inline>", "-", f"{type(exc).__name__}: {exc}") from exc
