"""Footnotes as their authors wrote them: a small allow-list of HTML, and LaTeX shown as MathML.

The field's results files write footnotes as HTML (``<br>``, ``<a href=...>``) and some as LaTeX
(``\\(\\ell_\\infty\\)``). :func:`footnote_html` turns LaTeX between ``\\( \\)``, ``\\[ \\]`` or ``$$ $$``
(not single dollars, which prose uses for amounts) into MathML (latex2mathml, server-side: no script, no CDN; Chromium renders MathML) and
then sanitises the whole with nh3 (ammonia's allow-list sanitiser): only the tags below survive,
links only to http(s) and with ``rel="nofollow noopener noreferrer"``, no event handler, no style,
no script (its content dropped too). :func:`footnote_text` is the same footnote as plain text, for
tooltips and CSV cells.
"""
from __future__ import annotations

import html
import re

import nh3
from latex2mathml.converter import convert as latex_to_mathml
from markupsafe import Markup

__all__ = ["footnote_html", "footnote_text", "TEXT_TAGS", "MATH_TAGS"]

#: the HTML a footnote may use
TEXT_TAGS = frozenset({"a", "b", "strong", "i", "em", "u", "br", "p", "sup", "sub", "code", "span", "ul", "ol", "li"})
#: the MathML latex2mathml writes
MATH_TAGS = frozenset({"math", "mrow", "mi", "mo", "mn", "ms", "mtext", "mspace", "msub", "msup", "msubsup", "mfrac",
                       "msqrt", "mroot", "mstyle", "munder", "mover", "munderover", "mtable", "mtr", "mtd", "mpadded",
                       "mphantom", "menclose", "semantics", "annotation"})
_MATH_ATTRIBUTES = frozenset({"xmlns", "display", "mathvariant", "stretchy", "fence", "separator", "lspace", "rspace",
                              "accent", "accentunder", "linethickness", "columnalign", "rowspacing", "columnspacing",
                              "width", "height", "depth", "notation", "minsize", "maxsize", "movablelimits", "symmetric"})
_ATTRIBUTES = {"a": {"href", "title"}, **{tag: set(_MATH_ATTRIBUTES) for tag in MATH_TAGS}}
#: LaTeX spans: \( \), \[ \] and $$ $$
_LATEX = re.compile(r"\\\((.+?)\\\)|\\\[(.+?)\\\]|\$\$(.+?)\$\$", re.DOTALL)


def _math(match: re.Match[str]) -> str:
    inline, block, double = match.groups()
    source = html.unescape(next(g for g in (inline, block, double) if g is not None))
    try:
        return latex_to_mathml(source, display="block" if block is not None or double is not None else "inline")
    except Exception:  # latex2mathml raises many kinds of error on LaTeX it does not know: keep the text
        return match.group(0)


def footnote_html(text: str | None) -> Markup:
    """The footnote as safe HTML (LaTeX as MathML), ready to be placed in a page."""
    if not text:
        return Markup("")
    with_math = _LATEX.sub(_math, text)
    return Markup(nh3.clean(with_math, tags=set(TEXT_TAGS | MATH_TAGS), attributes=_ATTRIBUTES,
                            url_schemes={"http", "https"}, link_rel="nofollow noopener noreferrer"))


def footnote_text(text: str | None) -> str:
    """The footnote as one line of plain text (tags dropped, LaTeX left as written, entities decoded)."""
    if not text:
        return ""
    no_tags = nh3.clean(re.sub(r"<br\s*/?>", " ", text, flags=re.IGNORECASE), tags=set())
    return " ".join(html.unescape(no_tags).split())
