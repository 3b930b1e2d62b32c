"""The zones-and-conduits diagram: laid out by Graphviz ``dot``, embedded as inline SVG.

One node per zone, ranked by Purdue level (enterprise at the top, field at the bottom;
addresses outside every zone share the top rank). Edges::

    solid, dark      observed traffic on an allowed zone pair  (label: services, flows)
    solid, red, bold observed traffic with a policy violation
    dashed, grey     a declared conduit that carried no traffic

Node ids are generated (``z0``, ``z1``...), never taken from the data; labels pass
through the ``graphviz`` package's quoting. The SVG that ``dot`` returns is parsed and
rebuilt from an allow-list of elements and attributes (:func:`sanitize`), so nothing
but shapes and text reaches the HTML, whatever a label contained.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import graphviz

SVG_NS = "http://www.w3.org/2000/svg"
#: Elements and attributes kept from dot's SVG; everything else is dropped.
ALLOWED_ELEMENTS = frozenset({"svg", "g", "title", "polygon", "polyline", "path", "ellipse", "text"})
ALLOWED_ATTRIBUTES = frozenset({
    "width", "height", "viewBox", "transform", "points", "d", "fill", "stroke", "stroke-width",
    "stroke-dasharray", "font-family", "font-size", "font-weight", "text-anchor", "x", "y",
    "cx", "cy", "rx", "ry", "class", "id",
})
#: Attribute values may carry only these characters (no ':' so no scheme, no quotes);
#: ``url(`` references are refused on top.
SAFE_VALUE = re.compile(r"^[A-Za-z0-9 #.,%()_\-]*$")
COLOURS = {"observed": "#1f4e79", "violation": "#c00000", "declared": "#8c8c8c"}


class DiagramUnavailable(Exception):
    """Graphviz ``dot`` is missing or failed; the message says what to install."""


def _text(value: str) -> str:
    """A label as literal text: dot reads backslash escapes in quoted strings, and the
    graphviz package would pass a ``<...>`` label through as an HTML-like label."""
    return graphviz.nohtml(str(value).replace("\\", "\\\\"))


def dot_source(diagram: dict) -> str:
    g = graphviz.Digraph("zones", graph_attr={
        "rankdir": "TB", "nodesep": "0.6", "ranksep": "0.8", "fontname": "Helvetica", "bgcolor": "white",
        "splines": "spline"})
    g.attr("node", shape="box", style="rounded,filled", fillcolor="#eef3f8", color="#1f4e79",
           fontname="Helvetica", fontsize="12")
    g.attr("edge", fontname="Helvetica", fontsize="10")
    ids = {n["id"]: f"z{i}" for i, n in enumerate(diagram["nodes"])}
    by_level: dict = {}
    for n in diagram["nodes"]:
        by_level.setdefault(n["level"], []).append(ids[n["id"]])
        fill = "#fff4e5" if n["level"] is None else "#eef3f8"
        g.node(ids[n["id"]], label=_text(f"{n['label']}\n{n['detail']}"), fillcolor=fill)
    for level, members in by_level.items():
        with g.subgraph() as s:
            s.attr(rank="min" if level is None else "same")
            for m in members:
                s.node(m)
    for e in diagram["edges"]:
        if e["kind"] == "declared":
            g.edge(ids[e["from"]], ids[e["to"]], label=_text(e["label"]), style="dashed",
                   color=COLOURS["declared"], fontcolor=COLOURS["declared"])
        else:
            colour = COLOURS["violation"] if e["violation"] else COLOURS["observed"]
            g.edge(ids[e["from"]], ids[e["to"]], label=_text(e["label"]), color=colour, fontcolor=colour,
                   penwidth="2.5" if e["violation"] else "1.4")
    return g.source


def render_svg(diagram: dict) -> str:
    """Lay out and draw the diagram; returns sanitised SVG markup."""
    try:
        raw = graphviz.Source(dot_source(diagram)).pipe(format="svg")
    except graphviz.ExecutableNotFound:
        raise DiagramUnavailable("Graphviz 'dot' not found (install the graphviz system package)") from None
    except (graphviz.CalledProcessError, OSError) as exc:
        raise DiagramUnavailable(f"Graphviz 'dot' failed: {exc}") from None
    return sanitize(raw)


def sanitize(svg: bytes | str) -> str:
    """Rebuild ``svg`` from the allow-list: unknown elements (script, foreignObject, a,
    image...) are dropped with their content, unknown attributes (on*, href, style)
    and values outside :data:`SAFE_VALUE` are dropped."""
    if isinstance(svg, bytes):
        svg = svg.decode("utf-8", "replace")
    svg = re.sub(r"<!DOCTYPE[^>]*>", "", svg)   # dot's DTD line; ElementTree would not fetch it anyway
    root = ET.fromstring(svg)
    ET.register_namespace("", SVG_NS)
    clean = _copy(root)
    if clean is None:
        raise DiagramUnavailable("Graphviz returned no SVG document")
    clean.set("role", "img")
    clean.set("aria-label", "zones, conduits and observed flows")
    return ET.tostring(clean, encoding="unicode")


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _copy(el: ET.Element) -> ET.Element | None:
    name = _local(el.tag) if isinstance(el.tag, str) else ""
    if name not in ALLOWED_ELEMENTS:
        return None
    out = ET.Element(f"{{{SVG_NS}}}{name}")
    for key, value in el.attrib.items():
        if key in ALLOWED_ATTRIBUTES and SAFE_VALUE.match(value) and "url(" not in value.lower():
            out.set(key, value)
    out.text = el.text
    for child in el:
        c = _copy(child)
        if c is not None:
            c.tail = child.tail
            out.append(c)
    return out
