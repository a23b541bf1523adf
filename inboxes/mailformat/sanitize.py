"""HTML from customers, made harmless with nh3 before it is stored.

What survives: formatting tags, tables, links (http, https, mailto, tel), a short list of
CSS properties inside style attributes, and images whose source is `cid:` (an inline part of
the same message), `data:image/...` (embedded, except SVG) or http(s).

Remote images are kept as data on purpose: dropping them would lose what the customer sent
(a screenshot hosted elsewhere). The console renders this HTML in a sandboxed frame under a
CSP that blocks remote loads, and shows remote images only when the agent asks for them, so
keeping the URL tracks nobody by itself.

What never survives: script, style and other active elements with their content, event
handler attributes (on*), javascript:/vbscript:/data: URLs outside images, forms, frames.
"""

from __future__ import annotations

import html as html_lib
import re

import nh3

from inboxes.mailformat.charsets import clean_text

_TAGS = set(nh3.ALLOWED_TAGS) | {"font", "center", "tfoot", "big"}
_TAGS -= {"map", "area"}  # image maps add URLs we would have to vet twice, for no real mail value
_DROP_WITH_CONTENT = {"script", "style", "title", "head", "noscript", "template", "iframe", "object", "embed",
                      "svg", "math", "textarea", "select", "button"}
_GENERIC_ATTRIBUTES = {"style", "dir", "lang", "title", "align", "valign", "width", "height", "bgcolor", "color"}
_ATTRIBUTES = {
    "*": _GENERIC_ATTRIBUTES,
    "a": {"href", "name"},
    "img": {"src", "alt", "border"},
    "font": {"face", "size"},
    "table": {"border", "cellpadding", "cellspacing", "summary"},
    "td": {"colspan", "rowspan", "nowrap"},
    "th": {"colspan", "rowspan", "scope"},
    "ol": {"start", "type"},
    "ul": {"type"},
    "col": {"span"},
    "colgroup": {"span"},
}
# Layout and typography only: no url(), no position (overlays that fake the console's UI).
_STYLE_PROPERTIES = {
    "color", "background-color", "font", "font-family", "font-size", "font-style", "font-weight",
    "text-align", "text-decoration", "text-indent", "text-transform", "line-height", "letter-spacing",
    "white-space", "vertical-align", "direction", "margin", "margin-top", "margin-right", "margin-bottom",
    "margin-left", "padding", "padding-top", "padding-right", "padding-bottom", "padding-left", "border",
    "border-top", "border-right", "border-bottom", "border-left", "border-color", "border-style",
    "border-width", "border-collapse", "border-spacing", "border-radius", "width", "height", "max-width",
    "min-width", "max-height", "min-height", "display", "list-style-type", "table-layout",
}
_URL_SCHEMES = {"http", "https", "mailto", "tel", "cid", "data"}
_URL_ATTRIBUTES = {"href", "src"}
_DATA_IMAGE = re.compile(r"^\s*data:image/(png|jpe?g|gif|webp|bmp);", re.IGNORECASE)


def _filter_attribute(tag: str, attribute: str, value: str) -> str | None:
    if attribute not in _URL_ATTRIBUTES:
        return value
    scheme = value.strip().split(":", 1)[0].lower() if ":" in value else ""
    if scheme == "data":
        # A data: link opens attacker-chosen HTML on a click; as an image it is only pixels.
        return value if tag == "img" and attribute == "src" and _DATA_IMAGE.match(value) else None
    if scheme == "cid" and tag != "img":
        return None
    return value


def sanitize_html(html: str) -> str:
    """Sanitized HTML; empty when nothing displayable is left."""
    cleaned = nh3.clean(
        clean_text(html),
        tags=_TAGS,
        clean_content_tags=_DROP_WITH_CONTENT,
        attributes=_ATTRIBUTES,
        attribute_filter=_filter_attribute,
        url_schemes=_URL_SCHEMES,
        filter_style_properties=_STYLE_PROPERTIES,
        link_rel="noopener noreferrer nofollow",
        strip_comments=True,
    )
    return cleaned.strip()


def html_to_text(html: str) -> str:
    """A plain-text rendering of HTML, for previews and search when a message has no text part."""
    with_breaks = re.sub(r"(?i)<br\s*/?>|</(p|div|tr|li|h[1-6]|blockquote)>", "\n", html)
    text = nh3.clean(with_breaks, tags=set(), clean_content_tags=_DROP_WITH_CONTENT)
    text = html_lib.unescape(text)
    text = re.sub(r"[ \t\r\f\v]+", " ", text)
    return clean_text(re.sub(r"\n\s*\n\s*\n+", "\n\n", text)).strip()
