"""A minimal AWS Lambda Runtime API client, standard library only.

Loads the handler named by _HANDLER ("module.function") from
LAMBDA_TASK_ROOT, then loops: GET /next, call the handler, POST /response
(or /error). Import failures go to /init/error. Each event's trace is put in
_X_AMZN_TRACE_ID (and TRACEPARENT) before the handler runs. Works against stoke's
worker and against AWS Lambda itself.
"""
import http.client
import importlib
import json
import os
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
    """One persistent HTTP connection, reopened on failure."""

    def __init__(self):
        self.conn = None

    def request(self, method, path, body=None, headers=None):
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(API, timeout=None)
            try:
                self.conn.request(method, BASE + path, body=body, headers=headers or {})
                resp = self.conn.getresponse()
                return resp, resp.read()
            except (http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = None
                if attempt == 2:
                    raise


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
        resp, body = api.request("GET", "/invocation/next")
        headers = {k.lower(): v for k, v in resp.getheaders()}
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
