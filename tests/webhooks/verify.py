"""Verifies recorded webhook deliveries with the reference `standardwebhooks` package (PyPI).

    python verify.py SECRET DELIVERIES.jsonl

Each line of the file is {"id", "timestamp", "signature", "body"} as a receiver got them. Prints one
line per delivery, `ok` or `bad <why>`, in order; tests/it/webhooks.rs reads them.
"""
import json
import sys

from standardwebhooks.webhooks import Webhook

secret, path = sys.argv[1], sys.argv[2]
hook = Webhook(secret)
with open(path, encoding="utf-8") as f:
    for line in f:
        d = json.loads(line)
        headers = {
            "webhook-id": d["id"],
            "webhook-timestamp": d["timestamp"],
            "webhook-signature": d["signature"],
        }
        try:
            payload = hook.verify(d["body"], headers)
            assert isinstance(payload, dict) and "type" in payload
            print("ok")
        except Exception as e:  # noqa: BLE001 - any refusal is a failed verification
            print("bad", type(e).__name__)
