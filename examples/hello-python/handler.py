"""The hello function.

A Lambda HTTP handler, as every Lambda tutorial writes one: called through
its function URL (`curl -X POST localhost:8080/fn/hello -d '{"name":"Ada"}'`)
it gets Lambda's function URL event and reads the JSON request body from
event["body"]; it returns a proxy response greeting the name. It is also
subscribed to the NATS subjects greetings.* (see stoke.toml), and `stoke
invoke` hands it the event itself. A few keys of the event (the body, for a
request) make it misbehave on purpose, for the integration tests:
  {"crash": true}     exit the process mid-event (exit code 3; after
                      "sleep" if given)
  {"fail": "msg"}     raise ValueError("msg")
  {"terminal": "msg"} raise TerminalError("msg"): not retried
  {"fail_until": N}   fail (ValueError) on attempts before N, then answer
  {"sleep": seconds}  sleep before answering
  {"echo": X}         return X as a plain value (not a proxy response)
  {"env": "VAR"}      include os.environ.get("VAR") in the body as "env"
With `batch_size` above 1 on its subject trigger it gets {"records": [...]}
and reports the items carrying "fail" or "terminal" in batchItemFailures
(Lambda's ReportBatchItemFailures); the others succeed.
"""
import base64
import json
import os
import sys
import time


# Which process answered (its pid is 1 inside the sandbox's pid namespace).
INSTANCE = os.urandom(8).hex()


class TerminalError(Exception):
    """An error stoke does not retry (its errorType ends in TerminalError)."""


def batch_handler(event, context):
    failures = []
    for record in event["records"]:
        data = record.get("data")
        if not isinstance(data, dict):
            continue
        if "terminal" in data:
            failures.append({
                "itemIdentifier": record["messageId"],
                "errorType": "TerminalError",
                "errorMessage": str(data["terminal"]),
            })
        elif "fail" in data:
            failures.append({"itemIdentifier": record["messageId"]})
    print(f"batch of {len(event['records'])}: {len(failures)} failed", flush=True)
    return {"batchItemFailures": failures}


def request_body(event):
    """The JSON body of a function URL event (payload 2.0), or None."""
    body = event.get("body") or ""
    if event.get("isBase64Encoded"):
        body = base64.b64decode(body).decode("utf-8", "replace")
    try:
        return json.loads(body) if body else {}
    except ValueError:
        return None


def handler(event, context):
    if isinstance(event, dict) and isinstance(event.get("records"), list):
        return batch_handler(event, context)
    # Called through its function URL: the request is described, the
    # payload is its body.
    http = None
    if isinstance(event, dict) and event.get("version") == "2.0" and "requestContext" in event:
        http = {
            "method": event["requestContext"]["http"]["method"],
            "path": event.get("rawPath"),
            "query": event.get("queryStringParameters") or {},
        }
        event = request_body(event)
    # A message on a subscribed subject arrives wrapped with where it came
    # from; its payload is under "data".
    nats = None
    if isinstance(event, dict) and event.get("source") == "nats":
        nats = {k: event.get(k) for k in ("subject", "sequence", "publishedAt", "headers")}
        event = event.get("data")
    if not isinstance(event, dict):
        event = {}
    if event.get("crash"):
        # After {"sleep": seconds} if both are given.
        time.sleep(float(event.get("sleep", 0)))
        print("crashing on purpose", file=sys.stderr, flush=True)
        os._exit(3)
    if "terminal" in event:
        raise TerminalError(str(event["terminal"]))
    if context.attempt < int(event.get("fail_until", 0)):
        raise ValueError(f"attempt {context.attempt} fails on purpose")
    if "fail" in event:
        raise ValueError(str(event["fail"]))
    if "sleep" in event:
        time.sleep(float(event["sleep"]))
    if "echo" in event:
        return event["echo"]
    body = {
        "message": f"Hello, {event.get('name', 'world')}!",
        "pid": os.getpid(),
        "instance": INSTANCE,
        "request_id": context.aws_request_id,
        "idempotency_key": context.idempotency_key,
        "attempt": context.attempt,
    }
    if "env" in event:
        body["env"] = os.environ.get(str(event["env"]))
    if nats:
        body["nats"] = nats
    if http:
        body["http"] = http
    return {
        "statusCode": 200,
        "headers": {"content-type": "application/json"},
        "body": json.dumps(body),
    }
