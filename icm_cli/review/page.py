"""The review page: one self-contained static HTML file, relative links, a little inline JavaScript.

Everything shown comes from the manifest and from file names, which may hold
``<``, ``&``, quotes, non-ASCII or undecodable bytes: every text goes through
:func:`text` and every link through :func:`href`, nothing else reaches the
page. The script only sorts, filters and collects flagged results; without
it the page is a plain list in the order it was written.
"""

from __future__ import annotations

import html
import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from icm_cli.config import OUTPUT_KINDS
from icm_cli.video import source_file


def text(value) -> str:
    """Any value as HTML-escaped text (quotes too); undecodable bytes shown as U+FFFD."""
    s = "" if value is None else str(value)
    s = s.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return html.escape(s, quote=True)


def href(target: str | os.PathLike, page_dir: Path) -> str:
    """A link from the page's folder to ``target``: relative, percent-encoded (bytes kept), HTML-escaped."""
    target = os.path.abspath(os.fspath(target))
    try:
        rel = os.path.relpath(target, page_dir)
    except ValueError:  # another drive (Windows): an absolute file URL
        return text(Path(target).as_uri())
    rel = rel.replace(os.sep, "/")
    return text(quote(os.fsencode(rel), safe="/~"))


@dataclass
class Card:
    """One result as the page shows it."""

    ident: str
    name: str
    status: str
    confidence: float | None
    input: str
    source_path: str | None
    outputs: dict[str, str]          # kind -> existing file
    error: str | None = None
    empty: bool | None = None
    mask_area: float | None = None
    run_label: str | None = None
    overlay: str | None = None       # thumbnail paths (absolute)
    heat: str | None = None
    size: tuple[int, int] | None = None
    problems: list[str] = field(default_factory=list)


@dataclass
class RunView:
    label: str
    time: str
    command: str
    cwd: str
    version: str
    references: list[tuple[str, str, str | None, tuple[int, int] | None]]  # image, mask, thumb, size


@dataclass
class PageData:
    out: Path
    cards: list[Card]
    total: int
    counts: dict[str, int]
    runs: list[RunView]
    sort: str
    threshold: float
    unreadable_lines: int
    manifests: list[str]
    generated: str
    version: str


def _conf_class(conf: float | None, threshold: float) -> str:
    if conf is None:
        return "c-none"
    if conf < threshold:
        return "c-low"
    if conf < threshold + (1 - threshold) / 2:
        return "c-mid"
    return "c-high"


def _img(src: str | None, size, alt: str, page_dir: Path, cls: str, missing: str = "") -> str:
    """A lazily loaded thumbnail, or a grey box saying ``missing``."""
    if not src:
        return f'<div class="ph {cls}">{text(missing or alt)}</div>'
    w, h = size or (320, 240)
    return (f'<img class="{cls}" src="{href(src, page_dir)}" width="{w}" height="{h}" loading="lazy" '
            f'decoding="async" alt="{text(alt)}">')


def _card(c: Card, page_dir: Path, threshold: float, position: int) -> str:
    conf = "" if c.confidence is None else f"{c.confidence:.4f}"
    shown = "—" if c.confidence is None else f"{c.confidence:.2f}"
    tags = []
    if c.status != "done":
        tags.append(f'<span class="tag t-{text(c.status)}">{text(c.status)}</span>')
    if c.empty:
        tags.append('<span class="tag t-empty" title="the mask holds no pixel">empty</span>')
    if c.run_label:
        tags.append(f'<span class="tag t-run" title="the run that made this result">{text(c.run_label)}</span>')
    if not c.overlay and not c.heat:  # nothing to show (a failed source): one slim box, not two empty frames
        why = "the source could not be read" if c.status == "failed" else "no source, mask or heat map found"
        pics = f'<div class="ph wide">{text(why)}</div>'
    else:
        overlay = _img(c.overlay, c.size, f"{c.name}: the source with its mask", page_dir, "ov", "no picture")
        heat = _img(c.heat, c.size, f"{c.name}: heat map", page_dir, "hm", "no heat map")
        if c.source_path and c.overlay:
            overlay = f'<a href="{href(c.source_path, page_dir)}" target="_blank" title="open the source">{overlay}</a>'
        if c.heat and "heatmaps" in c.outputs:
            heat = (f'<a href="{href(c.outputs["heatmaps"], page_dir)}" target="_blank" '
                    f'title="open the heat map">{heat}</a>')
        pics = overlay + heat
    links = []
    if c.source_path:
        links.append(f'<a href="{href(c.source_path, page_dir)}" target="_blank">source</a>')
    for kind in OUTPUT_KINDS:
        if kind in c.outputs:
            label = kind[:-1] if kind.endswith("s") else kind
            links.append(f'<a href="{href(c.outputs[kind], page_dir)}" target="_blank">{label}</a>')
    area = "" if c.mask_area is None else f'<span class="area" title="object share of the image">{100 * c.mask_area:.1f}% of image</span>'
    err = f'<p class="err">{text(c.error)}</p>' if c.error else ""
    probs = "".join(f'<p class="warn">{text(p)}</p>' for p in c.problems)
    return (
        f'<article class="card s-{text(c.status)} lvl-{_conf_class(c.confidence, threshold)}" id="r-{c.ident}" data-conf="{conf}" data-name="{text(c.name)}" '
        f'data-status="{text(c.status)}" data-pos="{position}" data-input="{text(c.input)}">'
        f'<div class="pics">{pics}</div>'
        f'<div class="meta"><div class="top"><span class="conf {_conf_class(c.confidence, threshold)}" '
        f'title="confidence">{shown}</span><span class="name" title="{text(c.input)}">{text(c.name)}</span>'
        f'{"".join(tags)}<label class="flag" title="flag this result as wrong"><input type="checkbox"> flag</label></div>'
        f'<div class="path">{text(c.input)}</div>'
        f'<div class="links">{" · ".join(links)} {area}</div>{err}{probs}</div></article>'
    )


def _histogram(cards_conf: list[float], threshold: float) -> str:
    bins = [0] * 10
    for c in cards_conf:
        bins[min(9, int(c * 10))] += 1
    top = max(bins) or 1
    bars = []
    for i, n in enumerate(bins):
        lo, hi = i / 10, (i + 1) / 10
        cls = "low" if hi <= threshold + 1e-9 else "ok"
        bars.append(f'<button type="button" class="bar {cls}" data-below="{hi:.1f}" title="{n} with confidence '
                    f'{lo:.1f}–{hi:.1f}; click: show those below {hi:.1f}"><span style="height:{max(2, round(56 * n / top))}px">'
                    f'</span><i>{n}</i></button>')
    return f'<div class="hist" aria-label="confidence histogram">{"".join(bars)}<div class="axis"><span>0</span><span>0.5</span><span>1</span></div></div>'


def _runs(runs: list[RunView], page_dir: Path) -> str:
    if not runs:
        return ('<p class="muted">No run record in the manifest (written by an older icm): the command and '
                'references are not known.</p>')
    parts = []
    for i, r in enumerate(reversed(runs)):
        refs = []
        for image, mask, thumb, size in r.references:
            pic = _img(thumb, size, "reference with its mask", page_dir, "ref", "reference not readable")
            refs.append(f'<figure><a href="{href(source_file(image), page_dir)}" target="_blank">{pic}</a>'
                        f'<figcaption title="{text(image)} + {text(mask)}">{text(Path(image).name)}<br>'
                        f'<a href="{href(mask, page_dir)}" target="_blank">{text(Path(mask).name)}</a></figcaption></figure>')
        latest = " (latest)" if i == 0 and len(runs) > 1 else ""
        parts.append(
            f'<details class="run"{" open" if i == 0 else ""}><summary><b>{text(r.label)}</b>{latest} · {text(r.time)}'
            f'{" · icm " + text(r.version) if r.version else ""}</summary><div class="runbody">'
            f'<div class="refs">{"".join(refs) or "<p class=muted>no references recorded</p>"}</div>'
            f'<div class="cmdbox"><pre class="cmd">{text(r.command)}</pre>'
            f'{"<p class=muted>in " + text(r.cwd) + "</p>" if r.cwd else ""}</div></div></details>')
    return "".join(parts)


def render(data: PageData, page_path: Path) -> str:
    """The whole page as a string."""
    page_dir = page_path.parent.resolve()
    counts = data.counts
    confs = [c.confidence for c in data.cards if c.confidence is not None and c.status != "failed"]
    below = sum(1 for c in confs if c < data.threshold)
    unknown = sum(1 for c in data.cards if c.confidence is None and c.status != "failed")
    shown = len(data.cards)
    of = f"showing the first {shown} of {data.total} (--limit)" if shown < data.total else f"{shown} results"
    notes = []
    if data.unreadable_lines:
        notes.append(f"{data.unreadable_lines} manifest line(s) could not be read and were left out")
    if unknown:
        notes.append(f"{unknown} result(s) without a confidence (—): written by an icm without confidences; "
                     "they are listed after the others")
    cards = "".join(_card(c, page_dir, data.threshold, i) for i, c in enumerate(data.cards))
    done_title = f"results icm computed: {counts.get('done_earlier', 0)} of them by an earlier run, kept by a rerun"
    sort_opts = "".join(
        f'<option value="{v}"{" selected" if v == data.sort else ""}>{label}</option>'
        for v, label in (("confidence", "least confident first"), ("confidence-desc", "most confident first"),
                         ("name", "name")))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="icm {text(data.version)}">
<title>icm review · {text(data.out.name or data.out)}</title>
<style>{_CSS}</style></head>
<body data-threshold="{data.threshold}">
<header>
<div class="title"><h1>icm review</h1><span class="out" title="{text(data.out)}">{text(data.out)}</span></div>
<div class="summary">
<div class="counts">
<span class="n">{of}</span>
<span class="k k-done" title="{done_title}"><b>{counts.get("done", 0)}</b> done</span>
<span class="k k-skipped" title="outputs that were there, made by no recorded run"><b>{counts.get("skipped", 0)}</b> \
skipped (already there)</span>
<span class="k k-failed"><b>{counts.get("failed", 0)}</b> failed</span>
<span class="k k-low"><b>{below}</b> below {data.threshold:g}</span>
</div>
{_histogram(confs, data.threshold)}
</div>
{"".join(f'<p class="note">{text(n)}</p>' for n in notes)}
<section class="runs">{_runs(data.runs, page_dir)}</section>
<form class="controls" onsubmit="return false">
<label>Sort <select id="sort">{sort_opts}</select></label>
<label>Show <select id="status"><option value="">all</option><option value="failed">failed</option>
<option value="done">done</option><option value="skipped">skipped</option></select></label>
<label>Confidence below <input id="below" type="number" min="0" max="1" step="0.05" placeholder="any"></label>
<label>Name <input id="q" type="search" placeholder="filter by name"></label>
<label>Size <input id="zoom" type="range" min="100" max="320" step="20" value="200"></label>
<span id="visible" class="muted"></span>
</form>
</header>
<main id="cards">{cards}</main>
<aside id="flagged" hidden><b><span id="nflag">0</span> flagged</b>
<textarea id="flaglist" rows="4" readonly></textarea>
<button type="button" id="copy">Copy list</button>
<span class="muted">their inputs, one per line (for <code>icm propagate -</code>); correct their masks and pass them back as <code>--ref/--mask</code>, see the README's fix loop</span>
</aside>
<footer>written by icm {text(data.version)} on {text(data.generated)} from {text(", ".join(data.manifests))}</footer>
<script>{_JS}</script>
</body></html>
"""


def run_label(index: int) -> str:
    return f"run {index + 1}"


def command_line(run) -> str:
    """A :class:`~icm_cli.runner.manifest.RunRecord`'s command as one shell line."""
    cmd = run.command
    if isinstance(cmd, list):
        return shlex.join(str(c) for c in cmd)
    return str(cmd or "")


_CSS = """
:root{--bg:#f3f4f6;--fg:#16181d;--card:#fff;--muted:#6b7280;--line:#e2e4e9;--low:#c81e1e;--mid:#b45309;
--high:#15803d;--none:#6b7280;--thumb:200px;--accent:#2457d6}
@media (prefers-color-scheme:dark){:root{--bg:#15171b;--fg:#e8eaee;--card:#1f2228;--muted:#9aa1ad;--line:#30343c;
--low:#f87171;--mid:#fbbf24;--high:#4ade80;--accent:#7aa2ff}}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
header{padding:14px 20px 8px;border-bottom:1px solid var(--line);background:var(--card)}
.title{display:flex;align-items:baseline;gap:14px;flex-wrap:wrap}
h1{font-size:20px;margin:0}
.out{font-family:ui-monospace,Menlo,Consolas,monospace;color:var(--muted);word-break:break-all}
.summary{display:flex;gap:28px;align-items:flex-end;flex-wrap:wrap;margin:10px 0 4px}
.counts{display:flex;gap:16px;flex-wrap:wrap;align-items:baseline}
.counts .n{color:var(--muted)}
.k b{font-size:18px}.k-failed b{color:var(--low)}.k-low b{color:var(--mid)}
.hist{display:grid;grid-template-columns:repeat(10,22px);gap:2px;align-items:end;position:relative;padding-bottom:14px}
.hist .bar{all:unset;cursor:pointer;display:flex;flex-direction:column;justify-content:flex-end;align-items:center;height:74px}
.hist .bar span{display:block;width:100%;background:var(--high);border-radius:2px 2px 0 0}
.hist .bar.low span{background:var(--low)}
.hist .bar i{font-style:normal;font-size:10px;color:var(--muted)}
.hist .bar:hover span{outline:2px solid var(--accent)}
.hist .axis{position:absolute;bottom:0;left:0;right:0;display:flex;justify-content:space-between;font-size:10px;color:var(--muted)}
.note{margin:4px 0;color:var(--mid)}
.runs details{margin:6px 0;border:1px solid var(--line);border-radius:6px;padding:4px 10px}
.runs summary{cursor:pointer}
.cmd{white-space:pre-wrap;word-break:break-all;background:var(--bg);padding:6px 8px;border-radius:4px;margin:0 0 4px;font-size:12px}
.runbody{display:flex;gap:16px;align-items:flex-start;padding:6px 0}
.cmdbox{flex:1;min-width:300px}.cmdbox p{margin:0}
.refs{display:flex;gap:10px;flex-wrap:wrap}
.refs figure{margin:0;font-size:12px}
.refs img.ref{width:auto;height:84px;border-radius:4px;display:block}
.refs figcaption{max-width:160px;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.muted{color:var(--muted)}
.controls{display:flex;gap:16px;flex-wrap:wrap;align-items:center;margin:10px 0 2px}
.controls input[type=number]{width:70px}
.controls input,.controls select{font:inherit}
main{display:grid;grid-template-columns:repeat(auto-fill,minmax(calc(2*var(--thumb) + 22px),1fr));gap:12px;padding:14px 20px 90px}
.card{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:8px;content-visibility:auto;
contain-intrinsic-size:auto calc(0.75*var(--thumb) + 80px);border-left:5px solid var(--line)}
.card.s-failed{border-left-color:var(--low)}
.card.lvl-c-low{border-left-color:var(--low)}.card.lvl-c-mid{border-left-color:var(--mid)}.card.lvl-c-high{border-left-color:var(--high)}
.card.flagged{outline:2px solid var(--low)}
.pics{display:flex;gap:4px}
.pics a{display:block;line-height:0}
.pics img,.pics .ph{width:var(--thumb);height:auto;max-height:calc(0.75*var(--thumb));object-fit:contain;background:#0003;border-radius:4px}
.pics .ph.wide{width:100%;height:48px}
.pics .ph{height:calc(0.56*var(--thumb));display:flex;align-items:center;justify-content:center;color:var(--muted);font-size:12px;line-height:1.2}
.meta{margin-top:6px}
.top{display:flex;gap:8px;align-items:center;flex-wrap:wrap}
.conf{font-weight:700;font-variant-numeric:tabular-nums;min-width:40px;text-align:center;border-radius:4px;padding:1px 6px;color:#fff}
.c-low{background:var(--low)}.c-mid{background:var(--mid)}.c-high{background:var(--high)}.c-none{background:var(--none)}
.name{font-weight:600;word-break:break-all}
.tag{font-size:11px;padding:0 6px;border-radius:9px;border:1px solid var(--line);color:var(--muted)}
.t-failed{color:var(--low);border-color:var(--low)}.t-empty{color:var(--mid);border-color:var(--mid)}
.flag{margin-left:auto;font-size:12px;color:var(--muted);cursor:pointer;white-space:nowrap}
.path{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:11px;color:var(--muted);word-break:break-all;margin-top:2px}
.links{font-size:12px;margin-top:2px}.links a{color:var(--accent)}
.area{color:var(--muted);margin-left:6px}
.err{color:var(--low);margin:4px 0 0;font-size:12px;word-break:break-word}
.warn{color:var(--mid);margin:2px 0 0;font-size:11px;word-break:break-word}
.hidden{display:none}
aside[hidden]{display:none}
aside{position:fixed;bottom:0;left:0;right:0;background:var(--card);border-top:2px solid var(--low);padding:8px 20px;
display:flex;gap:12px;align-items:center;flex-wrap:wrap}
aside textarea{flex:1;min-width:260px;font:12px ui-monospace,Menlo,Consolas,monospace}
footer{color:var(--muted);font-size:12px;padding:0 20px 20px}
"""

_JS = """
(function () {
  "use strict";
  var main = document.getElementById("cards");
  var cards = Array.prototype.slice.call(main.querySelectorAll("article.card"));
  var sortSel = document.getElementById("sort"), statusSel = document.getElementById("status");
  var below = document.getElementById("below"), q = document.getElementById("q");
  var zoom = document.getElementById("zoom"), visible = document.getElementById("visible");
  var collator = new Intl.Collator(undefined, {numeric: true, sensitivity: "base"});
  function conf(c) { var v = c.getAttribute("data-conf"); return v === "" ? null : parseFloat(v); }
  function group(c) { return c.getAttribute("data-status") === "failed" ? 0 : (conf(c) === null ? 2 : 1); }
  function byName(a, b) { return collator.compare(a.getAttribute("data-name"), b.getAttribute("data-name")); }
  function byConf(dir) {
    return function (a, b) {
      var ga = group(a), gb = group(b);
      if (ga !== gb) { return ga - gb; }
      if (ga === 1 && conf(a) !== conf(b)) { return dir * (conf(a) - conf(b)); }
      return byName(a, b);
    };
  }
  function sort() {
    var how = sortSel.value;
    var cmp = how === "name" ? byName : byConf(how === "confidence-desc" ? -1 : 1);
    var sorted = cards.slice().sort(cmp);
    var frag = document.createDocumentFragment();
    sorted.forEach(function (c) { frag.appendChild(c); });
    main.appendChild(frag);
  }
  function filter() {
    var st = statusSel.value, lim = below.value === "" ? null : parseFloat(below.value);
    var needle = q.value.trim().toLowerCase(), n = 0;
    cards.forEach(function (c) {
      var ok = (!st || c.getAttribute("data-status") === st);
      if (ok && lim !== null) { var v = conf(c); ok = v !== null && v < lim; }
      if (ok && needle) {
        ok = (c.getAttribute("data-name") + " " + c.getAttribute("data-input")).toLowerCase().indexOf(needle) >= 0;
      }
      c.classList.toggle("hidden", !ok);
      if (ok) { n += 1; }
    });
    visible.textContent = n + " of " + cards.length + " shown";
  }
  var flagged = document.getElementById("flagged"), list = document.getElementById("flaglist");
  function flags() {
    var inputs = [];
    cards.forEach(function (c) {
      var on = c.querySelector(".flag input").checked;
      c.classList.toggle("flagged", on);
      if (on) { inputs.push(c.getAttribute("data-input")); }
    });
    document.getElementById("nflag").textContent = String(inputs.length);
    list.value = inputs.join("\\n");
    flagged.hidden = inputs.length === 0;
  }
  document.getElementById("copy").addEventListener("click", function () {
    list.select();
    if (navigator.clipboard && window.isSecureContext) { navigator.clipboard.writeText(list.value).catch(function () {}); }
    else { try { document.execCommand("copy"); } catch (e) { /* the text stays selected */ } }
  });
  main.addEventListener("change", function (e) { if (e.target.closest(".flag")) { flags(); } });
  Array.prototype.forEach.call(document.querySelectorAll(".hist .bar"), function (b) {
    b.addEventListener("click", function () { below.value = b.getAttribute("data-below"); statusSel.value = ""; filter(); writeHash(); });
  });
  main.addEventListener("error", function (e) {
    var t = e.target;
    if (t && t.tagName === "IMG") { t.classList.add("broken"); t.alt = "thumbnail missing: rerun icm review"; }
  }, true);
  // The view lives in the address's #fragment (sort=name&status=failed&below=0.5&q=cam), so a
  // bookmark or a link reopens it.
  function readHash() {
    var params = {};
    location.hash.replace(/^#/, "").split("&").forEach(function (kv) {
      var i = kv.indexOf("=");
      if (i > 0) { try { params[kv.slice(0, i)] = decodeURIComponent(kv.slice(i + 1)); } catch (e) { /* ignore */ } }
    });
    if (params.sort && sortSel.querySelector('option[value="' + params.sort.replace(/[^a-z-]/g, "") + '"]')) {
      sortSel.value = params.sort;
    }
    if (params.status !== undefined && statusSel.querySelector('option[value="' + params.status.replace(/[^a-z]/g, "") + '"]')) {
      statusSel.value = params.status;
    }
    if (params.below !== undefined && !isNaN(parseFloat(params.below))) { below.value = params.below; }
    if (params.q !== undefined) { q.value = params.q; }
  }
  function writeHash() {
    var parts = [];
    if (sortSel.value !== sortSel.querySelector("option[selected]").value) { parts.push("sort=" + sortSel.value); }
    if (statusSel.value) { parts.push("status=" + statusSel.value); }
    if (below.value !== "") { parts.push("below=" + encodeURIComponent(below.value)); }
    if (q.value) { parts.push("q=" + encodeURIComponent(q.value)); }
    try { history.replaceState(null, "", parts.length ? "#" + parts.join("&") : location.pathname); } catch (e) { /* file: URLs in some browsers */ }
  }
  sortSel.addEventListener("change", function () { sort(); writeHash(); });
  [statusSel, below, q].forEach(function (el) {
    el.addEventListener("input", function () { filter(); writeHash(); });
    el.addEventListener("change", function () { filter(); writeHash(); });
  });
  zoom.addEventListener("input", function () { document.documentElement.style.setProperty("--thumb", zoom.value + "px"); });
  window.addEventListener("hashchange", function () { readHash(); sort(); filter(); });
  readHash();
  sort();
  filter();
  flags();
  document.body.setAttribute("data-ready", "1");
})();
"""
