"""The gateway's HTML page: one folder's listing, with links and a selection form.

Plain HTML with a little JavaScript and no build step. The selection is an ordinary
``<form method="get">`` whose checkboxes are named ``name``: submitting it asks
``/zip/{folder}?name=a&name=b``, with or without JavaScript; the script only adds the total size
of the selection and "select all". When uploads are allowed, an ordinary
``<form method="post" enctype="multipart/form-data">`` above the listing sends the files, or
the folder, picked into ``/upload/{folder}`` (which sends the browser back here). Every name
goes through :func:`html.escape` (text and attributes) and every URL through
:func:`urllib.parse.quote`, so a file called ``<script>x.txt`` shows as text.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import html
from urllib.parse import quote

from ._progress import human_bytes


@dataclasses.dataclass(slots=True)
class Row:
    """One line of the listing: a file, or a folder with the total of what it holds."""

    name: str
    is_dir: bool
    size: int
    files: int
    mtime: dt.datetime | None


def _url(base: str, route: str, *segments: str) -> str:
    path = "/".join(s for s in segments if s)
    return html.escape(f"{base}/{route}/{quote(path, safe='/')}" if route else f"{base}/")


def _date(moment: dt.datetime | None) -> str:
    if moment is None:
        return ""
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M")


def _crumbs(base: str, root_name: str, folder: str) -> str:
    parts = [f'<a href="{_url(base, "")}">{html.escape(root_name or "/")}</a>']
    done: list[str] = []
    for segment in folder.split("/") if folder else []:
        done.append(segment)
        parts.append(f'<a href="{_url(base, "browse", *done)}/">{html.escape(segment)}</a>')
    parts[-1] = f'<strong aria-current="page">{parts[-1]}</strong>'
    return '<span class="sep">/</span>'.join(parts)


def _row(base: str, folder: str, row: Row) -> str:
    name = html.escape(row.name)
    files = "1 file" if row.files == 1 else f"{row.files} files"
    if row.is_dir:
        link = f'<a class="dir" href="{_url(base, "browse", folder, row.name)}/">{name}/</a>'
        detail = f'<span class="count">{files}</span>'
        get = (
            f'<a href="{_url(base, "zip", folder, row.name)}">zip</a> '
            f'<a href="{_url(base, "multipart", folder, row.name)}">multipart</a>'
        )
    else:
        link = f'<a class="file" href="{_url(base, "files", folder, row.name)}">{name}</a>'
        detail = ""
        get = ""
    date = _date(row.mtime)
    return (
        f'<tr><td class="pick"><input type="checkbox" name="name" value="{name}" '
        f'data-size="{row.size}" aria-label="select {name}"></td>'
        f'<td class="name">{link}{detail}</td>'
        f'<td class="size" data-bytes="{row.size}">{human_bytes(row.size)}</td>'
        f'<td class="date"><time>{date}</time></td>'
        f'<td class="get">{get}</td></tr>'
    )


def render_page(
    *, base: str, root_name: str, folder: str, rows: list[Row], upload: bool = False
) -> str:
    """The page of ``folder`` (relative to the root; ``""`` for the root itself).

    Args:
        base: The path the gateway is mounted at (``""`` when it is the whole app).
        root_name: The served folder's own name, shown as the first crumb.
        folder: The folder shown, relative to the root.
        rows: Its files and folders, in the order to show them.
        upload: Show the form that uploads files or a folder into ``folder``.
    """
    total = sum(row.size for row in rows)
    files = sum(row.files for row in rows)
    title = html.escape(folder.rsplit("/", 1)[-1] if folder else root_name or "/")
    body = "\n".join(_row(base, folder, row) for row in rows) or (
        '<tr><td colspan="5" class="empty">This folder is empty.</td></tr>'
    )
    return _TEMPLATE.format(
        title=title,
        crumbs=_crumbs(base, root_name, folder),
        zip=_url(base, "zip", folder),
        multipart=_url(base, "multipart", folder),
        summary=html.escape(f"{files} file{'s' if files != 1 else ''}, {human_bytes(total)}"),
        action=_url(base, "zip", folder),
        rows=body,
        upload=_UPLOAD_FORM.format(action=_url(base, "upload", folder)) if upload else "",
        file_icon=_FILE_ICON,
        folder_icon=_FOLDER_ICON,
    )


_SVG = "data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 16 16'%3E"
_FILE_ICON = _SVG + (
    "%3Cpath fill='none' stroke='%2398a2b3' stroke-width='1.2' "
    "d='M3.5 1.5h6l3 3v10h-9z M9.5 1.5v3h3'/%3E%3C/svg%3E"
)
_FOLDER_ICON = _SVG + (
    "%3Cpath fill='%23e0a526' d='M1 3.5C1 2.7 1.7 2 2.5 2h3.6l1.6 1.6h5.8c.8 0 1.5.7 "
    "1.5 1.5v7.4c0 .8-.7 1.5-1.5 1.5h-11C1.7 14 1 13.3 1 12.5z'/%3E%3C/svg%3E"
)


_UPLOAD_FORM = """<form id="upload" class="upload" method="post" enctype="multipart/form-data"
 action="{action}">
<span class="label">Upload here</span>
<label class="choose">Files<input type="file" name="files" id="upload-files" multiple></label>
<label class="choose">A folder<input type="file" name="files" id="upload-folder"
 webkitdirectory></label>
<span id="picked" class="picked"></span>
<button type="submit" id="send">Upload</button>
</form>"""


_TEMPLATE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · multiresp</title>
<style>
:root {{ color-scheme: light dark; --fg: #1d2430; --muted: #667085; --line: #e4e7ec;
  --accent: #2457c5; --bg: #fff; --panel: #f6f8fb; }}
@media (prefers-color-scheme: dark) {{ :root {{ --fg: #e6e9ef; --muted: #98a2b3;
  --line: #2c3340; --accent: #7aa2ff; --bg: #12161d; --panel: #1a1f29; }} }}
* {{ box-sizing: border-box; }}
body {{ margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  color: var(--fg); background: var(--bg); }}
main {{ max-width: 68rem; margin: 0 auto; padding: 1rem 1rem 5.5rem; }}
header {{ display: flex; flex-wrap: wrap; gap: .5rem 1.5rem; align-items: baseline;
  justify-content: space-between; padding-bottom: .75rem; border-bottom: 1px solid var(--line); }}
h1 {{ font-size: 1.15rem; margin: 0; font-weight: 600; overflow-wrap: anywhere; }}
h1 .sep {{ color: var(--muted); padding: 0 .35rem; font-weight: 400; }}
h1 a {{ color: inherit; }}
.whole {{ color: var(--muted); display: flex; flex-wrap: wrap; gap: .4rem; align-items: baseline; }}
.whole a, .get a {{ display: inline-block; border: 1px solid var(--line); border-radius: 999px;
  padding: .05rem .6rem; font-size: .85rem; }}
.whole a:hover, .get a:hover {{ border-color: var(--accent); text-decoration: none; }}
a {{ color: var(--accent); text-decoration: none; }}
a:hover {{ text-decoration: underline; }}
table {{ width: 100%; border-collapse: collapse; margin-top: .5rem; }}
th {{ text-align: left; font-weight: 500; color: var(--muted); font-size: .85rem; }}
th, td {{ padding: .5rem .5rem; border-bottom: 1px solid var(--line); vertical-align: top; }}
tbody tr:hover {{ background: var(--panel); }}
.pick {{ width: 2rem; }}
.pick input {{ width: 1.1rem; height: 1.1rem; margin: .15rem 0 0; }}
.name {{ overflow-wrap: anywhere; width: 100%; }}
.name a.dir {{ font-weight: 600; }}
.name a {{ display: inline-flex; align-items: baseline; }}
.name a::before {{ content: ""; flex: none; width: 1.1em; height: 1.1em; align-self: center;
  margin-right: .4rem; background: url("{file_icon}") no-repeat center / contain; }}
.name a.dir::before {{ background-image: url("{folder_icon}"); }}
.count {{ color: var(--muted); font-size: .85rem; margin-left: .5rem; white-space: nowrap; }}
.size {{ text-align: right; white-space: nowrap; font-variant-numeric: tabular-nums; }}
.date {{ white-space: nowrap; color: var(--muted); font-variant-numeric: tabular-nums; }}
.get {{ white-space: nowrap; text-align: right; }}
.get a + a {{ margin-left: .4rem; }}
.empty {{ color: var(--muted); text-align: center; padding: 2rem; }}
.bar {{ position: fixed; left: 0; right: 0; bottom: 0; background: var(--panel);
  border-top: 1px solid var(--line); }}
#total {{ white-space: nowrap; }}
.bar div {{ max-width: 68rem; margin: 0 auto; padding: .75rem 1rem; display: flex;
  gap: 1rem; align-items: center; justify-content: space-between; }}
button {{ font: inherit; font-weight: 600; color: #fff; background: var(--accent); border: 0;
  border-radius: .4rem; padding: .55rem 1.1rem; cursor: pointer; }}
button:disabled {{ opacity: .45; cursor: default; }}
.upload {{ display: flex; flex-wrap: wrap; gap: .5rem .75rem; align-items: center;
  margin-top: .75rem; padding: .6rem .75rem; background: var(--panel);
  border: 1px dashed var(--line); border-radius: .5rem; }}
.upload .label {{ font-weight: 600; }}
.choose {{ position: relative; overflow: hidden; border: 1px solid var(--line);
  border-radius: 999px; padding: .2rem .8rem; cursor: pointer; background: var(--bg); }}
.choose:hover, .choose:focus-within {{ border-color: var(--accent); }}
.choose input {{ position: absolute; inset: 0; opacity: 0; cursor: pointer; }}
.picked {{ color: var(--muted); flex: 1; overflow-wrap: anywhere; }}
.upload button {{ padding: .35rem 1rem; }}
@media (max-width: 40rem) {{
  body {{ font-size: 16px; }}
  main {{ padding: .75rem .6rem 5.5rem; }}
  .date, th.date, th:last-child, td.get:empty {{ display: none; }}
  table, thead, tbody {{ display: block; }}
  tr {{ display: grid; grid-template-columns: 2rem 1fr auto;
    border-bottom: 1px solid var(--line); }}
  th, td {{ border-bottom: 0; }}
  td.get {{ grid-column: 2 / 4; text-align: left; padding-top: 0; }}
}}
</style>
</head>
<body>
<main>
<header>
<h1>{crumbs}</h1>
<div class="whole"><span>{summary}</span>
<a href="{zip}" title="this whole folder as one zip">zip</a>
<a href="{multipart}" title="this whole folder as multipart/mixed">multipart</a></div>
</header>
{upload}
<form id="pick" method="get" action="{action}">
<table>
<thead><tr><th class="pick"><input type="checkbox" id="all" aria-label="select all"></th>
<th>Name</th><th class="size">Size</th><th class="date">Modified (UTC)</th><th></th></tr></thead>
<tbody>
{rows}
</tbody>
</table>
<div class="bar"><div><span id="total">Nothing selected</span>
<button type="submit" id="download">Download as zip</button></div></div>
</form>
</main>
<script>
(function () {{
  var form = document.getElementById("pick");
  var boxes = form.querySelectorAll('input[name="name"]');
  var all = document.getElementById("all");
  var total = document.getElementById("total");
  var button = document.getElementById("download");
  function human(n) {{
    var units = ["B", "KiB", "MiB", "GiB"];
    for (var i = 0; i < units.length; i++) {{
      if (n < 1024 || i === units.length - 1) return i ? n.toFixed(1) + " " + units[i] : n + " B";
      n /= 1024;
    }}
  }}
  function update() {{
    var count = 0, bytes = 0;
    boxes.forEach(function (box) {{
      if (box.checked) {{ count++; bytes += Number(box.dataset.size); }}
    }});
    total.textContent = count ? count + " selected \\u00b7 " + human(bytes) : "Nothing selected";
    button.disabled = !count;
    all.checked = count > 0 && count === boxes.length;
    all.indeterminate = count > 0 && count < boxes.length;
  }}
  all.addEventListener("change", function () {{
    boxes.forEach(function (box) {{ box.checked = all.checked; }});
    update();
  }});
  form.addEventListener("change", update);
  update();
  var upload = document.getElementById("upload");
  if (upload) {{
    var inputs = upload.querySelectorAll('input[type="file"]');
    var picked = document.getElementById("picked");
    var send = document.getElementById("send");
    var showPicked = function () {{
      var count = 0, bytes = 0;
      inputs.forEach(function (input) {{
        Array.prototype.forEach.call(input.files, function (file) {{
          count++; bytes += file.size;
        }});
      }});
      picked.textContent = count ? count + " to upload \u00b7 " + human(bytes) : "";
      send.disabled = !count;
    }};
    upload.addEventListener("change", showPicked);
    upload.addEventListener("submit", function () {{
      send.disabled = true; send.textContent = "Uploading\u2026";
    }});
    showPicked();
  }}
}})();
</script>
</body>
</html>
"""
