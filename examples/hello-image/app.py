"""A Lambda handler as it ships in a Lambda container image: the image's
ENTRYPOINT is the runtime interface client (`python3 -m awslambdaric`), its
CMD this handler, and the code sits in /var/task. It reports what it sees,
so you can tell the root is the image's (Debian 12 here, whatever the host)."""
import os
import sys


def handler(event, context):
    try:
        with open("/etc/os-release") as f:
            pretty = next(l for l in f if l.startswith("PRETTY_NAME=")).split("=", 1)[1].strip().strip('"')
    except FileNotFoundError:  # run as a package: the sandbox shows little of the host's /etc
        pretty = "an unknown OS"
    return {
        "message": f"Hello from {pretty}",
        "os": pretty,
        "python": sys.executable,
        "cwd": os.getcwd(),
        "task_root": os.environ.get("LAMBDA_TASK_ROOT"),
        "request_id": context.aws_request_id,
        "uid": os.getuid(),
        "event": event,
    }
