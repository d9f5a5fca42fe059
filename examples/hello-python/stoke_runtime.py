"""A minimal AWS Lambda Runtime API client, standard library only.

Loads the handler named by _HANDLER ("module.function") from
LAMBDA_TASK_ROOT, then loops: GET /next, call the handler, POST /response
(or /error). Import failures go to /init/error. Each event's trace is put in
_X_AMZN_TRACE_ID (and TRACEPARENT) before the handler runs. Works against stoke's
worker and against AWS Lambda itself.
"""
import importlib
import json
import os
import socket
import sys
import time
import traceback

API = os.environ["AWS_LAMBDA_RUNTIME_API"]
BASE = "/2018-06-01/runtime"


class Context:
    def __init__(self, headers):
        # Header names arrive lowercased (HTTP/1.1 names are case-insensitive).
        self.aws_request_id = headers.get("lambda-runtime-aws-request-id", "")
        self.invoked_function_arn = headers.get("lambda-runtime-invoked-function-arn", "")
        self.function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "")
        self.function_version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION", "")
        self.memory_limit_in_mb = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "")
        # stoke's additions: the event's idempotency key and attempt number.
        self.idempotency_key = headers.get("stoke-idempotency-key", "")
        self.attempt = int(headers.get("stoke-attempt", "1") or 1)
        self._deadline_ms = int(headers.get("lambda-runtime-deadline-ms", "0") or 0)

    def get_remaining_time_in_millis(self):
        return max(0, self._deadline_ms - int(time.time() * 1000))


class Api:
    """One persistent HTTP/1.1 connection to the Runtime API over a plain
    socket, reopened on failure. (http.client took ~4x the CPU per event.)"""

    def __init__(self):
        host, _, port = API.rpartition(":")
        self.addr = (host.strip("[]") or "127.0.0.1", int(port))
        self.sock = None
        self.buf = bytearray()

    def close(self):
        if self.sock is not None:
            self.sock.close()
        self.sock = None
        self.buf = bytearray()

    def request(self, method, path, body=b"", headers=None):
        """Send one request; (status, lowercased headers, body)."""
        head = f"{method} {BASE}{path} HTTP/1.1\r\nHost: {API}\r\nContent-Length: {len(body)}\r\n"
        for name, value in (headers or {}).items():
            head += f"{name}: {value}\r\n"
        message = head.encode("latin-1") + b"\r\n" + body
        for attempt in (1, 2):
            try:
                if self.sock is None:
                    self.sock = socket.create_connection(self.addr)
                    self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self.sock.sendall(message)
                return self.response()
            except OSError:
                self.close()
                if attempt == 2:
                    raise

    def fill(self):
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise ConnectionError("the Runtime API closed the connection")
        self.buf += chunk

    def take(self, n):
        while len(self.buf) < n:
            self.fill()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def line(self):
        while (end := self.buf.find(b"\r\n")) < 0:
            self.fill()
        return self.take(end + 2)[:-2]

    def response(self):
        status = int(self.line().split(b" ", 2)[1])
        headers = {}
        while line := self.line():
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while size := int(self.line().split(b";")[0], 16):
                body += self.take(size + 2)[:-2]
            while self.line():  # trailers
                pass
        else:
            body = self.take(int(headers.get("content-length", "0")))
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, headers, body


def error_body(exc):
    return json.dumps({
        "errorMessage": str(exc),
        "errorType": type(exc).__name__,
        "stackTrace": traceback.format_exception(type(exc), exc, exc.__traceback__),
    }).encode()


def load_handler(api):
    spec = os.environ.get("_HANDLER", "")
    try:
        if "." not in spec:
            raise ValueError(f"_HANDLER {spec!r} is not of the form module.function")
        module_name, func_name = spec.rsplit(".", 1)
        sys.path.insert(0, os.environ.get("LAMBDA_TASK_ROOT", os.getcwd()))
        return getattr(importlib.import_module(module_name), func_name)
    except Exception as exc:  # report, then exit: the worker sees an init error
        api.request("POST", "/init/error", error_body(exc),
                    {"Lambda-Runtime-Function-Error-Type": "Runtime.ImportModuleError"})
        sys.exit(1)


def main():
    api = Api()
    handler = load_handler(api)
    while True:
        _, headers, body = api.request("GET", "/invocation/next")
        context = Context(headers)
        request_id = context.aws_request_id
        # As Lambda's runtime clients do: the event's trace, for SDKs and
        # tracers in the handler (X-Ray form, and W3C trace context).
        for header, var in (("lambda-runtime-trace-id", "_X_AMZN_TRACE_ID"),
                            ("traceparent", "TRACEPARENT")):
            if headers.get(header):
                os.environ[var] = headers[header]
            else:
                os.environ.pop(var, None)
        try:
            event = json.loads(body) if body else None
            result = handler(event, context)
            out = json.dumps(result).encode()
            api.request("POST", f"/invocation/{request_id}/response", out,
                        {"Content-Type": "application/json"})
        except Exception as exc:
            api.request("POST", f"/invocation/{request_id}/error", error_body(exc),
                        {"Lambda-Runtime-Function-Error-Type": "Unhandled"})


if __name__ == "__main__":
    main()
