"""The API's documentation page: ``/docs``, the OpenAPI schema (its request and answer models are
``serving.models``) rendered as a page served from here (no scripts or styles from elsewhere: it works
offline), and the API's description at its top."""
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
