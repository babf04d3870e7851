"""HTML for the session pages and the cohort index: self-contained (inline CSS, SVG and a few lines
of JS), printable, and free of face images and absolute paths."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone, tzinfo
from html import escape
from typing import Any
from urllib.parse import quote

from fermon import __version__
from fermon.report.plots import SESSION_FIGURES

_CSS = """
:root { --fg: #1a1a1a; --muted: #5a5a5a; --line: #d0d0d0; --flag: #b3261e; --ok: #1e6b32; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg);
       margin: 0 auto; padding: 1.5rem; max-width: 1200px; }
h1 { font-size: 1.5rem; margin: 0 0 .3rem; } h2 { font-size: 1.15rem; margin: 1.6rem 0 .5rem; }
.muted { color: var(--muted); }
table { border-collapse: collapse; margin: .3rem 0 1rem; }
th, td { border-bottom: 1px solid var(--line); padding: .25rem .6rem; text-align: left; vertical-align: top; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
th.sortable { cursor: pointer; user-select: none; white-space: nowrap; }
th.sortable::after { content: " \\2195"; color: var(--muted); }
.flag { display: inline-block; padding: 0 .45rem; margin: 0 .2rem .2rem 0; border-radius: .6rem;
        background: #fde7e5; color: var(--flag); font-size: .85em; white-space: nowrap; }
.ok { color: var(--ok); }
figure { margin: .4rem 0 1.2rem; break-inside: avoid; page-break-inside: avoid; }
figure svg { max-width: 100%; height: auto; }
figcaption { color: var(--muted); font-size: .9em; }
code { font-size: .9em; word-break: break-all; }
.wide { overflow-x: auto; }
.thumbs { display: flex; flex-wrap: wrap; gap: .8rem; }
figure.thumb { margin: 0; text-align: center; } figure.thumb img { height: 96px; border-radius: 4px; }
.warning { color: var(--flag); font-weight: 600; }
.nowrap { white-space: nowrap; }
/* The cohort table fits a 1,400 px window: the index may be wider than a session page, headers and
   flags wrap at spaces, long session ids anywhere. */
body.index { max-width: 1400px; padding: 1.5rem 1rem; }
table.cohort { font-size: .9em; }
table.cohort th, table.cohort td { padding: .25rem .35rem; }
table.cohort th.sortable, table.cohort .flag { white-space: normal; }
table.cohort td.id { overflow-wrap: anywhere; min-width: 9em; }
@media print {
  body { max-width: none; padding: 0; font-size: 11px; }
  nav, .noprint { display: none; }
  a { color: inherit; text-decoration: none; }
  h2 { break-after: avoid; page-break-after: avoid; }
  table, tr { break-inside: avoid; page-break-inside: avoid; }
  .wide { overflow: visible; }
  th.sortable::after { content: ""; }
}
"""

# Click a header to sort by its column; numbers sort numerically via data-v, the rest as text.
_SORT_JS = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("th.sortable").forEach(function (th, col) {
    th.addEventListener("click", function () {
      var body = table.tBodies[0], rows = Array.from(body.rows);
      var dir = th.dataset.dir === "asc" ? -1 : 1; th.dataset.dir = dir === 1 ? "asc" : "desc";
      rows.sort(function (a, b) {
        var x = a.cells[col].dataset.v, y = b.cells[col].dataset.v;
        var nx = parseFloat(x), ny = parseFloat(y);
        if (!isNaN(nx) && !isNaN(ny)) return dir * (nx - ny);
        if (isNaN(nx) !== isNaN(ny)) return isNaN(nx) ? 1 : -1;
        return dir * String(x).localeCompare(String(y));
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
"""

FLAG_TEXT = {
    "low_coverage": "low coverage",
    "multiple_faces": "several faces",
    "low_confidence": "low expression confidence",
    "low_detection_score": "low detection score",
    "decode_gaps": "segments failed to decode",
}


def page(title: str, body: str, script: str = "", body_class: str = "") -> str:
    """A complete, self-contained HTML document."""
    js = f"<script>{script}</script>" if script else ""
    attributes = f' class="{body_class}"' if body_class else ""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_CSS}</style></head>"
        f"<body{attributes}>{body}{js}</body></html>\n"
    )


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def percent(value: Any) -> str:
    return f"{100 * value:.1f}%" if _finite(value) else "–"


def number(value: Any, digits: int = 2) -> str:
    return f"{value:.{digits}f}" if _finite(value) else "–"


def duration(seconds: Any) -> str:
    if not _finite(seconds):
        return "–"
    minutes, secs = divmod(float(seconds), 60)
    hours, minutes = divmod(int(minutes), 60)
    return f"{hours}:{minutes:02d}:{secs:04.1f}" if hours else f"{minutes}:{secs:04.1f}"


def flags_html(row: Mapping[str, Any]) -> str:
    names = [f for f in (row.get("quality_flags") or "").split(";") if f]
    if not names:
        return '<span class="ok">none</span>'
    return "".join(f'<span class="flag">{escape(FLAG_TEXT.get(n, n))}</span>' for n in names)


def session_href(session_id: str) -> str:
    return f"sessions/{quote(session_id)}.html"


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]], numeric: Sequence[int] = ()) -> str:
    head = "".join(f'<th class="{"num" if k in numeric else ""}">{escape(h)}</th>' for k, h in enumerate(headers))
    body = "".join(
        "<tr>"
        + "".join(f'<td class="{"num" if k in numeric else ""}">{escape(str(v))}</td>' for k, v in enumerate(r))
        + "</tr>"
        for r in rows
    )
    return f'<div class="wide"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _figure(svg: str, caption: str) -> str:
    return f"<figure>{svg}<figcaption>{escape(caption)}</figcaption></figure>"


def figures_html(figures: Mapping[str, str], after: Mapping[str, str] | None = None) -> str:
    """Each figure of :data:`fermon.report.plots.SESSION_FIGURES` that was drawn, in order, under its
    heading, with its caption; ``after`` holds HTML to follow a figure (by key)."""
    after = after or {}
    sections = []
    for entry in SESSION_FIGURES:
        if entry.key not in figures:
            continue
        sections.append(f"<h2>{escape(entry.heading)}</h2>\n{_figure(figures[entry.key], entry.caption)}\n")
        if entry.key in after:
            sections.append(f"{after[entry.key]}\n")
    return "".join(sections)


def session_page(
    row: Mapping[str, Any],
    metadata: Mapping[str, Any],
    figures: Mapping[str, str],  # inline SVG by key: fermon.report.plots.session_figures
    gaps: Sequence[Mapping[str, Any]],
    thresholds: Mapping[str, float],
    thumbnails: Sequence[Any] | None = None,
    missing_videos: Sequence[str] = (),
    clinical_html: str = "",
) -> str:
    """One session's page: figures, quality flags and provenance; faces only when ``thumbnails`` is
    given (a list, possibly empty: built with --include-thumbnails); ``clinical_html`` (wall clock,
    patient, events: fermon.report.clinical) after the quality facts."""
    sid = str(row["session_id"])
    class_names = list(metadata.get("class_names") or [])
    facts = [
        ("recorded", duration(row["duration_s"])),
        ("first to last sample", duration(row.get("span_s", row["duration_s"]))),
        ("sampled frames", f"{row['sampled_frames']} at {number(row['sampling_fps'], 1)} per second"),
        ("coverage (target face)", percent(row["coverage"])),
        ("dominant expression", row.get("dominant_expression") or "–"),
        ("mean expression confidence", number(row["mean_confidence"])),
        ("mean detection score", number(row["mean_det_score"])),
        ("samples with several faces", percent(row["multi_face_share"])),
        ("decode gaps", f"{row['decode_gaps']} ({number(row['decode_gap_s'], 1)} s)"),
    ]
    facts_html = "".join(f"<tr><th>{escape(k)}</th><td>{escape(str(v))}</td></tr>" for k, v in facts)
    shares = _table(
        ["expression", "share of covered time", "mean probability"],
        [[c, percent(row.get(f"share_{c}")), number(row.get(f"mean_prob_{c}"), 3)] for c in class_names],
        numeric=(1, 2),
    )
    rules = (
        f"Flags: coverage below {percent(thresholds['min_coverage'])}; more than "
        f"{percent(thresholds['max_multi_face_share'])} of samples with several faces; mean expression confidence "
        f"below {number(thresholds['min_confidence'])}; mean detection score below "
        f"{number(thresholds['min_det_score'])}; any segment that failed to decode."
    )
    gaps_html = (
        _table(
            ["video", "from (s)", "to (s)", "frames", "reason"],
            [
                [g["video"], number(g["start_s"], 1), number(g["end_s"], 1), f"{g['first_frame']}–{g['last_frame']}",
                 g.get("reason", "")]
                for g in gaps
            ],
            numeric=(1, 2),
        )
        if gaps
        else "<p>All sampled frames decoded.</p>"
    )  # fmt: skip
    body = f"""
<nav><a href="../index.html">&larr; all sessions</a></nav>
<h1>Session {escape(sid)}</h1>
<p class="muted">Expression figures use the target face (the patient's track) only; a sample without a
target face counts as not covered. Shaded red bands mark segments that failed to decode.</p>
<h2>Quality</h2><p>{flags_html(row)}</p><p class="muted">{escape(rules)}</p>
<div class="wide"><table>{facts_html}</table></div>
{clinical_html}{thumbnails_html(thumbnails, missing_videos)}
{no_target_html(row, metadata, "coverage" in figures)}{figures_html(figures, {"shares": shares})}
<h2>Segments that failed to decode</h2>
{gaps_html}
{provenance_html(metadata)}
"""
    return page(f"fermon – {sid}", body)


def no_target_html(row: Mapping[str, Any], metadata: Mapping[str, Any], faces_seen: bool) -> str:
    """For a session with no target face, the sentence that stands for its expression figures;
    ``faces_seen``: some sample has a face (the coverage figure is drawn only then)."""
    if row.get("covered_frames", 1):
        return ""
    reference = (metadata.get("identity") or {}).get("reference") or {}
    if not faces_seen:
        why = "no face was detected in any sample"
    elif reference and not reference.get("matched"):
        why = "faces were seen, but none matched the patient's reference photo closely enough"
    else:
        why = "faces were seen, but none was taken for the patient's"
    return (
        f'<h2>Expressions</h2><p class="warning">No target face was found in this session: {why}. There is '
        "nothing to show of the patient's expressions, their shares or their detection scores.</p>\n"
    )


def thumbnails_html(thumbnails: Sequence[Any] | None, missing_videos: Sequence[str]) -> str:
    """The faces section: absent by default; with --include-thumbnails, each expression's most
    confident sample, under a warning that the page now identifies the patient."""
    if thumbnails is None:
        return ""
    figures = "".join(
        f'<figure class="thumb"><img src="{t.data_uri}" alt="face, {escape(t.expression)}, {t.timestamp_s:.1f} s">'
        f"<figcaption>{escape(t.expression)}<br>{duration(t.timestamp_s)} · p {t.probability:.2f}</figcaption></figure>"
        for t in thumbnails
    )
    missing = (
        f'<p class="muted">Not found or not readable, so no faces from: {escape(", ".join(missing_videos))}.</p>'
        if missing_videos
        else ""
    )
    empty = "" if thumbnails else "<p>No target face to show.</p>"
    return f"""
<h2>Faces</h2>
<p class="warning">This page shows the patient's face (built with --include-thumbnails): treat it as
identifiable data.</p>
<p class="muted">For each expression, the sample where the target face shows it most confidently.</p>
<div class="thumbs">{figures}</div>{empty}{missing}
"""


def provenance_html(metadata: Mapping[str, Any]) -> str:
    """Video facts, model and detector identity, versions and options."""
    videos = metadata.get("videos") or []
    video_rows = [
        [
            v.get("video"), number(v.get("offset_s"), 1), duration(v.get("duration_s")), number(v.get("fps"), 2),
            v.get("frame_count"), v.get("codec"), f"{v.get('width')}×{v.get('height')}",
        ]
        for v in videos
    ]  # fmt: skip
    model = metadata.get("model") or {}
    detector = metadata.get("detector") or {}
    identity = [
        ("model", model.get("name", "")),
        ("checkpoint sha256", model.get("checkpoint_sha256", "")),
        ("face detector", detector.get("name", "")),
        ("detector weights sha256", detector.get("weights_sha256", "")),
        ("classes (model order)", ", ".join(metadata.get("class_names") or [])),
        ("timeline written by fermon", metadata.get("fermon_version", "")),
        ("report written by fermon", __version__),
    ]
    identity_html = "".join(f"<tr><th>{escape(k)}</th><td><code>{escape(str(v))}</code></td></tr>" for k, v in identity)
    config = json.dumps(metadata.get("config") or {}, indent=1, sort_keys=True)
    return f"""
<h2>Provenance</h2>
{_table(["video", "offset (s)", "duration", "fps", "frames", "codec", "size"], video_rows, numeric=(1, 2, 3, 4))}
<div class="wide"><table>{identity_html}</table></div>
<h3>Options</h3><pre><code>{escape(config)}</code></pre>
"""


def _cell(text: str, sort_value: Any, numeric: bool = False, kind: str = "") -> str:
    value = sort_value if not (isinstance(sort_value, float) and not math.isfinite(sort_value)) else ""
    return f'<td class="{"num" if numeric else kind}" data-v="{escape(str(value))}">{text}</td>'


def _start_text(start: Any, zone: tzinfo) -> str:
    """``2026-03-28 22:00 CET``, breaking only between the date and the time (the column stays narrow)."""
    if not start:
        return "–"
    local = datetime.fromisoformat(str(start)).astimezone(zone)
    name = f" {local.tzname()}" if not isinstance(zone, timezone) else ""
    return f'<span class="nowrap">{local:%Y-%m-%d}</span> <span class="nowrap">{local:%H:%M}{escape(name)}</span>'


def _index_head(class_names: Sequence[str], zone: tzinfo) -> str:
    """Two header rows: the session's columns, then the share of each expression under one heading."""
    zone_text = "UTC" if zone is timezone.utc else str(zone)
    headers = ["session", f"start ({zone_text})", "duration", "sampled", "coverage", "dominant", "confidence"]
    headers += ["several faces", "flags"]
    numeric = {2, 3, 4, 6, 7}
    first = "".join(
        f'<th rowspan="2" class="sortable{" num" if k in numeric else ""}">{escape(h)}</th>'
        for k, h in enumerate(headers)
    )
    shares = f'<th colspan="{len(class_names)}">share of covered time</th>' if class_names else ""
    second = "".join(f'<th class="sortable num">{escape(c)}</th>' for c in class_names)
    return f"<tr>{first}{shares}</tr><tr>{second}</tr>"


def index_page(
    rows: Sequence[Mapping[str, Any]],
    class_names: Sequence[str],
    failures: Sequence[Mapping[str, Any]],
    patients_html: str = "",
    zone: tzinfo = timezone.utc,
    top_html: str = "",
) -> str:
    """The cohort index, opening with ``top_html`` (fermon.report.patients' morning view): one sortable
    row per session (start times in ``zone``), the sessions by
    patient (``patients_html``, from fermon.report.clinical), then the inputs whose last attempt failed."""
    head = _index_head(class_names, zone)
    body = []
    for row in rows:
        sid = str(row["session_id"])
        cells = [
            _cell(f'<a href="{escape(session_href(sid))}">{escape(sid)}</a>', sid, kind="id"),
            _cell(_start_text(row.get("start_time"), zone), row.get("start_time") or ""),
            _cell(duration(row["duration_s"]), row["duration_s"], True),
            _cell(str(row["sampled_frames"]), row["sampled_frames"], True),
            _cell(percent(row["coverage"]), row["coverage"], True),
            _cell(escape(row.get("dominant_expression") or "–"), row.get("dominant_expression") or ""),
            _cell(number(row["mean_confidence"]), row["mean_confidence"], True),
            _cell(percent(row["multi_face_share"]), row["multi_face_share"], True),
            _cell(flags_html(row), row.get("quality_flags") or ""),
            *(_cell(percent(row.get(f"share_{c}")), row.get(f"share_{c}", ""), True) for c in class_names),
        ]
        body.append("<tr>" + "".join(cells) + "</tr>")
    sessions = (
        f'<div class="wide"><table class="sortable cohort"><thead>{head}</thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
        if rows
        else "<p>No session has a timeline yet.</p>"
    )
    failed = (
        _table(
            ["session", "videos", "status", "why", "when (UTC)"],
            [[f["session_id"], ", ".join(f["videos"]), f["status"], f["error"] or "", f["when"]] for f in failures],
        )
        if failures
        else "<p>None: every input's last attempt succeeded.</p>"
    )
    flagged = sum(1 for r in rows if r.get("quality_flags"))
    built = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    content = f"""
<h1>fermon sessions</h1>
<p class="muted">{len(rows)} session(s), {flagged} with quality flags, {len(failures)} failed input(s).
Report built {built} by fermon {escape(__version__)}. Click a column header to sort. The same figures are in
<code>summary.parquet</code> beside this folder.</p>
{top_html}{sessions}
{patients_html}<h2>Failed inputs</h2>
<p class="muted">Sessions whose latest processing attempt failed or was interrupted, from the run ledger.</p>
{failed}
"""
    return page("fermon – sessions", content, _SORT_JS, body_class="index")
