"""The API's documentation: the request fields and answer examples given to the OpenAPI schema, and ``/docs``,
that schema rendered as a page served from here (no scripts or styles from elsewhere: it works offline)."""
import html
import json

DESCRIPTION = (
    "Count people in pictures and videos with a Dehaze-P2PNet checkpoint. Errors are JSON "
    "`{\"error\": \"...\"}` with a 4xx status naming the problem (5xx only for a failure of the server). When "
    "`serve.py` was started with `--token`, every `/api/` route but `/api/health` needs the header "
    "`Authorization: Bearer <token>`. One picture or video frame runs at a time; requests wait in a queue of "
    "`--max_queue`, beyond which the answer is 503 with `Retry-After`. Uploads over `--max_upload_mb` are "
    "refused with 413 as they arrive, and stalled ones with 408 after `--client_timeout_s`. Only requests "
    "naming this server in `Host` are answered, and none from another site's page (`Origin`): 400 and 403. "
    "Zones: at most 64 polygons of 1000 corners each, 4,000 in all; answers: at most 100,000 points.")

ZONES_HELP = ('JSON of named polygons in the picture\'s pixels, as run_test.py --zones: '
              '{"gate": [[x, y], [x, y], [x, y]], ...}')
COUNT_FIELDS = [
    ("file", "binary", True, "the picture (JPEG, PNG, BMP, TIFF, WebP, ...)"),
    ("threshold", "number", False, "a point counts when its score exceeds this (default: serve.py --threshold)"),
    ("zones", "string", False, ZONES_HELP + "; the answer's zones gives each one's count"),
    ("exclude", "string", False, "the same form: points inside any of these polygons are dropped first"),
    ("restore", "boolean", False, "also return the restored view (checkpoints with the restoration module)"),
]
VIDEO_FIELDS = [
    ("file", "binary", True, "the video (mp4, avi, mkv, mov, webm, ...)"),
    ("threshold", "number", False, "as for /api/count"),
    ("zones", "string", False, ZONES_HELP),
    ("exclude", "string", False, "as for /api/count"),
    ("frame_stride", "integer", False, "count every N-th frame (default 1)"),
]
RECOUNT_FIELDS = [
    ("points", "array", True, "[[x, y, score], ...]: the points of an /api/count answer made at a lower threshold"),
    ("threshold", "number", False, "keep the points scoring above this (default: serve.py --threshold)"),
    ("zones", "object", False, '{"gate": [[x, y], [x, y], [x, y]], ...}'),
    ("exclude", "object", False, "the same form: points inside are dropped first"),
    ("density", "boolean", False, "also return the density heatmap layer (needs width and height)"),
    ("width", "integer", False, "the picture's width in pixels (for density)"),
    ("height", "integer", False, "the picture's height in pixels (for density)"),
]
COUNT = {"count": 2, "points": [[412.5, 233.1, 0.93], [430.2, 240.8, 0.71]], "points_truncated": False,
         "zones": {"gate": 1},
         "width": 1024, "height": 768, "threshold": 0.5, "milliseconds": 812.4}
RECOUNT = {"count": 1, "points": [[412.5, 233.1, 0.93]], "points_truncated": False, "zones": {"gate": 1},
           "threshold": 0.8,
           "density": {"image": "data:image/png;base64,...", "peak": 0.0021}}
VIDEO = {"id": "k3J9aQ0xZm1q", "name": "street.mp4", "state": "counting", "error": None, "frames_done": 2,
         "frames_total": 250, "fps": 25.0, "threshold": 0.5, "zones": ["gate"], "since": 0,
         "counts": [{"frame": 0, "time_s": 0.0, "count": 41, "zones": {"gate": 12}},
                    {"frame": 1, "time_s": 0.04, "count": 43, "zones": {"gate": 12}}]}
HEALTH = {"status": "ok", "model": "Hazy_JHU", "device": "cpu", "mode": "exact", "restoration": False,
          "threshold": 0.5, "queue": 0, "busy": False, "max_queue": 16, "max_upload_mb": 50.0,
          "max_megapixels": 50.0, "pictures_counted": 12, "videos_active": 0, "max_videos": 2,
          "max_video_s": 600.0, "auth": False}


def error(description: str) -> dict:
    return {"description": description,
            "content": {"application/json": {"example": {"error": "a line naming the problem"}}}}


COUNT_RESPONSES = {
    200: {"description": "the count", "content": {"application/json": {"example": COUNT}}},
    400: error("not a picture, a format outside the list, a truncated file, bad zone JSON or a bad field"),
    401: error("the token is missing or wrong"),
    403: error("the request comes from another site's page"),
    408: error("the upload stalled (serve.py --client_timeout_s)"),
    413: error("the upload is over --max_upload_mb, or the picture over --max_megapixels"),
    503: error("the queue is full: try again after Retry-After seconds"),
}


def example(value: dict) -> dict:
    return {"description": "an example", "content": {"application/json": {"example": value}}}


def schema(fields: list) -> dict:
    types = {"binary": {"type": "string", "format": "binary"}, "array": {"type": "array", "items": {}}}
    return {"type": "object", "required": [name for name, _, required, _ in fields if required],
            "properties": {name: {**types.get(kind, {"type": kind}), "description": text}
                           for name, kind, _, text in fields}}


def multipart(fields: list) -> dict:
    """``openapi_extra`` of a route that reads a multipart form of ``fields`` ``(name, type, required, help)``."""
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema(fields)}}}}


def json_body(fields: list) -> dict:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema(fields)}}}}


def render(openapi: dict) -> str:
    """The OpenAPI schema as one self-contained HTML page: each route, its fields and example answers."""
    sections = []
    for path, methods in openapi["paths"].items():
        for method, operation in methods.items():
            sections.append(render_operation(method.upper(), path, operation))
    info = openapi["info"]
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(info['title'])}: API</title><link rel="stylesheet" href="/static/page.css"></head>
<body class="docs"><header><h1>{html.escape(info['title'])}: API</h1><a href="/">the page</a>
<a href="/openapi.json">openapi.json</a></header><main>
<p>{inline_code(info.get('description', ''))}</p>
{''.join(sections)}
</main></body></html>"""


def render_operation(method: str, path: str, operation: dict) -> str:
    parts = [f'<section class="route"><h2><span class="method">{method}</span> <code>{html.escape(path)}</code></h2>',
             f"<p><b>{html.escape(operation.get('summary', ''))}</b></p>",
             f"<p>{inline_code(operation.get('description', ''))}</p>"]
    rows = [(item["name"], item.get("schema", {}).get("type", ""), item.get("required", False),
             f"in the {item['in']}") for item in operation.get("parameters", [])]
    for kind, content in operation.get("requestBody", {}).get("content", {}).items():
        body = content.get("schema", {})
        parts.append(f"<p>Body: <code>{html.escape(kind)}</code></p>")
        rows += [(name, prop.get("format") or prop.get("type", ""), name in body.get("required", []),
                  prop.get("description", "")) for name, prop in body.get("properties", {}).items()]
    if rows:
        parts.append("<table><tr><th>field</th><th>type</th><th>required</th><th>meaning</th></tr>"
                     + "".join(f"<tr><td><code>{html.escape(name)}</code></td><td>{html.escape(str(kind))}</td>"
                               f"<td>{'yes' if required else ''}</td><td>{html.escape(text)}</td></tr>"
                               for name, kind, required, text in rows) + "</table>")
    for status, response in operation.get("responses", {}).items():
        for content in response.get("content", {}).values():
            if "example" in content:
                parts.append(f"<p>{html.escape(str(status))}: {html.escape(response.get('description', ''))}</p>"
                             f"<pre>{html.escape(json.dumps(content['example'], indent=1))}</pre>")
    return "".join(parts) + "</section>"


def inline_code(text: str) -> str:
    """Markdown's `code` and ``code`` spans of ``text`` as HTML, the rest escaped."""
    pieces = html.escape(text).replace("``", "`").split("`")
    return "".join(f"<code>{piece}</code>" if index % 2 else piece for index, piece in enumerate(pieces))
