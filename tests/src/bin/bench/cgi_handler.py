"""CGI wrapper for the P4 peer (lighttpd mod_cgi): runs examples/hello-python's
handler module, copied next to this file, once per request, with the
request body as the event, and writes its Lambda proxy response as a CGI
response. One process per request, as mod_cgi runs it.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from handler import handler  # noqa: E402


class Context:
    """What the handler reads of a Lambda context."""
    aws_request_id = ""
    idempotency_key = ""
    attempt = 1


length = int(os.environ.get("CONTENT_LENGTH") or 0)
body = sys.stdin.buffer.read(length) if length else b""
result = handler(json.loads(body) if body else {}, Context())
lines = [f"Status: {result.get('statusCode', 200)}"]
lines += [f"{k}: {v}" for k, v in (result.get("headers") or {}).items()]
sys.stdout.write("\r\n".join(lines) + "\r\n\r\n" + result.get("body", ""))
