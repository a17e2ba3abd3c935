#!/usr/bin/env python3
"""An SMTP sink for the tests, from an independent SMTP implementation (PyPI aiosmtpd).

  smtp_sink.py PORT OUT    listens on 127.0.0.1:PORT; prints "ready" once it accepts mail, and
                           for each mail appends one JSON line to OUT: the envelope (mail_from,
                           rcpt_tos), the From, To, Subject and Date headers, the content type and
                           charset, and the text body as Python's email package decodes it.
Runs until killed.
"""
import email
import json
import sys
import threading
from email import policy

from aiosmtpd.controller import Controller


class Sink:
    def __init__(self, out):
        self.out = out

    async def handle_DATA(self, server, session, envelope):
        raw = envelope.original_content or envelope.content
        msg = email.message_from_bytes(raw, policy=policy.default)
        body = msg.get_body(preferencelist=("plain",))
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "from": str(msg["From"]),
            "to": str(msg["To"]),
            "subject": str(msg["Subject"]),
            "date": str(msg["Date"]),
            "content_type": msg.get_content_type(),
            "charset": msg.get_content_charset(),
            "text": body.get_content() if body is not None else None,
        }
        with open(self.out, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
        return "250 OK"


if __name__ == "__main__":
    port, out = int(sys.argv[1]), sys.argv[2]
    controller = Controller(Sink(out), hostname="127.0.0.1", port=port)
    controller.start()
    print("ready", flush=True)
    threading.Event().wait()
