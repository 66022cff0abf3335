"""Customer-facing text, rendered by name from ``templates/messages`` in one place.

Templates are ``<name>.<locale>.j2`` files (zh-CN first, English second). The environment
is Jinja2's sandbox with strict undefined variables, because managers edit templates: a
template may not reach into Python objects, and a missing variable is an error, not an
empty string.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment

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
        self.env = SandboxedEnvironment(
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

    def render_string(self, source: str, /, **variables: Any) -> str:
        """Render text a manager typed (e.g. a group welcome) in the same sandbox."""
        try:
            return self.env.from_string(source).render(**variables).strip()
        except jinja2.TemplateError as exc:
            raise TemplateRenderError("<inline>", "-", f"{type(exc).__name__}: {exc}") from exc
