"""Verifies requests Courier signed, with the Standard Webhooks reference library.

Reads a JSON list of cases from stdin, each {"secret", "id", "timestamp", "signature",
"body"}; prints a JSON list of booleans, true where the signature verifies.
"""
import json
import sys

from standardwebhooks import Webhook, WebhookVerificationError

results = []
for case in json.load(sys.stdin):
    headers = {
        "webhook-id": case["id"],
        "webhook-timestamp": case["timestamp"],
        "webhook-signature": case["signature"],
    }
    try:
        Webhook(case["secret"]).verify(case["body"].encode(), headers, json_parse=False)
        results.append(True)
    except WebhookVerificationError:
        results.append(False)
print(json.dumps(results))
