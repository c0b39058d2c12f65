#!/usr/bin/env python3
"""Example e-mail assistant: "sends" drafted e-mails through the safe-exec guard.

Run it under safe-exec (`safe-exec autonomous-email-assistant`). For each
draft in drafts.json it asks the supervisor's e-mail guard, which checks the
recipients, the confidence threshold of the draft's tier, suspicious content
and the `email_send` rate limit. An allowed draft is written to outbox/ as an
.eml file after a token from the `gmail_api` bucket; nothing goes over the
network. When a draft is blocked for a reason other than the rate limit, the
assistant escalates by "SMS" (a text file in outbox/) through the `sms_send`
bucket.

It speaks the supervisor's protocol directly: one JSON object per line over
the Unix socket named by SAFE_EXEC_SOCKET. Standard library only.
"""

import json
import os
import socket
import sys
import time
from datetime import datetime, timezone
from email.message import EmailMessage
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUTBOX = HERE / "outbox"
OWNER_PHONE = "+15550100"


class Supervisor:
    """A connection to the safe-exec supervisor's request channel."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.stream = self.sock.makefile("rwb")
        self.next_id = 1

    def call(self, op, **fields):
        """Send one request and return its reply; wait and retry while throttled."""
        while True:
            request = {"id": self.next_id, "op": op, **fields}
            self.next_id += 1
            self.stream.write(json.dumps(request).encode() + b"\n")
            self.stream.flush()
            line = self.stream.readline()
            if not line:
                raise ConnectionError("the supervisor closed the connection")
            reply = json.loads(line)
            error = reply.get("error") or {}
            if not reply["ok"] and error.get("code") == "throttled":
                time.sleep(min(error.get("retry_after_seconds", 0.1), 1.0))
                continue
            return reply

    def acquire(self, bucket, cost=1):
        reply = self.call("acquire", bucket=bucket, cost=cost)
        if not reply["ok"]:
            raise RuntimeError(reply["error"]["message"])
        return reply["result"]

    def audit(self, event, **details):
        self.call("audit", event=event, details=details)


def write_eml(draft, index):
    message = EmailMessage()
    message["From"] = "assistant@example.com"
    message["To"] = ", ".join(draft["to"])
    if draft.get("cc"):
        message["Cc"] = ", ".join(draft["cc"])
    message["Subject"] = draft["subject"]
    message.set_content(draft["body"])
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    path = OUTBOX / f"{stamp}-{index:02d}.eml"
    path.write_bytes(bytes(message))
    return path


def escalate(supervisor, blocked):
    """Send one SMS to the owner about the blocked drafts, within the sms_send limit."""
    grant = supervisor.acquire("sms_send")
    if not grant["granted"]:
        wait = grant["retry_after_seconds"]
        print(f"SMS escalation rate limited: the next SMS is allowed in {wait:.0f}s")
        return
    text = f"{len(blocked)} drafted e-mail(s) need your review: " + "; ".join(blocked)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    (OUTBOX / f"{stamp}-sms.txt").write_text(f"To: {OWNER_PHONE}\n\n{text}\n")
    supervisor.audit("SMS_ESCALATION", to=OWNER_PHONE, drafts=len(blocked))
    print(f"SMS escalation sent to {OWNER_PHONE}")


def main():
    socket_path = os.environ.get("SAFE_EXEC_SOCKET")
    if not socket_path:
        print("run this under safe-exec: safe-exec autonomous-email-assistant", file=sys.stderr)
        return 2
    supervisor = Supervisor(socket_path)
    drafts = json.loads((HERE / "drafts.json").read_text())

    sent, rate_limited, blocked = 0, 0, []
    for index, draft in enumerate(drafts, start=1):
        reply = supervisor.call("guard_email", **draft)
        if not reply["ok"]:
            print(f"draft {index}: the guard rejected the request: {reply['error']['message']}")
            blocked.append(f"#{index} invalid")
            continue
        decision = reply["result"]
        cached = " (cached)" if decision["cached"] else ""
        if decision["allowed"]:
            supervisor.acquire("gmail_api")
            path = write_eml(draft, index)
            sent += 1
            print(f"draft {index}: sent{cached} -> outbox/{path.name}")
            continue
        codes = [reason["code"] for reason in decision["reasons"]]
        if codes == ["rate_limited"]:
            rate_limited += 1
            wait = decision.get("retry_after_seconds", 0)
            print(f"draft {index}: held back by the hourly limit; the next send is allowed in {wait:.0f}s")
            continue
        blocked.append(f"#{index} {draft['subject']!r} ({', '.join(codes)})")
        print(f"draft {index}: blocked{cached}")
        for reason in decision["reasons"]:
            print(f"    {reason['code']}: {reason['detail']}")

    print(f"sent {sent}, held back by the rate limit {rate_limited}, blocked {len(blocked)}")
    if blocked:
        escalate(supervisor, blocked)
    return 0


if __name__ == "__main__":
    sys.exit(main())
