#!/usr/bin/env python3
"""Waits until N Kustomizations (kustomize.toolkit.fluxcd.io/v1) in a namespace report
Ready=True, by watching them (one LIST, then a WATCH: no polling load on the API server).

    wait_ready.py SERVER CA TOKEN NAMESPACE N TIMEOUT_S [HANDLED_TOKEN] [PID]

With HANDLED_TOKEN, a Kustomization counts only once status.lastHandledReconcileAt equals it
(a reconcile requested through the reconcile.fluxcd.io/requestedAt annotation was handled).
With PID, VmHWM and VmRSS of that process are sampled every 0.5 s (the controller's peak
is VmHWM anyway; the samples only say when it was reached).

Prints one line of JSON on stdout when done: the epoch time the last one became ready,
counts, and failures seen (Ready=False reasons), and exits 0; exits 1 on timeout.
"""

import json
import os
import ssl
import sys
import threading
import time
import urllib.request

server, ca, token, namespace, want, timeout = sys.argv[1:7]
want = int(want)
deadline = time.time() + float(timeout)
handled_token = sys.argv[7] if len(sys.argv) > 7 and sys.argv[7] else None
pid = sys.argv[8] if len(sys.argv) > 8 and sys.argv[8] else None

ctx = ssl.create_default_context(cafile=ca)
base = f"{server}/apis/kustomize.toolkit.fluxcd.io/v1/namespaces/{namespace}/kustomizations"
headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}

ready = {}  # name -> epoch time it was first seen ready
failed = {}  # name -> last Ready=False reason/message
lock = threading.Lock()
samples = []


def is_ready(obj):
    status = obj.get("status") or {}
    if handled_token is not None and status.get("lastHandledReconcileAt") != handled_token:
        return False, None
    for c in status.get("conditions") or []:
        if c.get("type") == "Ready":
            if c.get("status") == "True":
                return True, None
            if c.get("status") == "False":
                return False, f"{c.get('reason')}: {c.get('message', '')[:300]}"
    return False, None


def see(obj, now):
    name = obj["metadata"]["name"]
    ok, why = is_ready(obj)
    with lock:
        if ok:
            ready.setdefault(name, now)
            failed.pop(name, None)
        elif why:
            failed[name] = why


def sampler():
    while True:
        try:
            with open(f"/proc/{pid}/status") as f:
                fields = dict(
                    line.split(":", 1) for line in f.read().splitlines() if ":" in line
                )
            samples.append(
                (time.time(), int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0]))
            )
        except (OSError, KeyError, ValueError):
            return
        time.sleep(0.5)


if pid:
    threading.Thread(target=sampler, daemon=True).start()

while time.time() < deadline:
    try:
        with urllib.request.urlopen(
            urllib.request.Request(base, headers=headers), context=ctx, timeout=60
        ) as r:
            listing = json.load(r)
        now = time.time()
        for obj in listing.get("items", []):
            see(obj, now)
        if len(ready) >= want:
            break
        rv = listing["metadata"]["resourceVersion"]
        left = max(1, int(deadline - time.time()))
        url = f"{base}?watch=1&resourceVersion={rv}&allowWatchBookmarks=true&timeoutSeconds={min(left, 300)}"
        with urllib.request.urlopen(
            urllib.request.Request(url, headers=headers), context=ctx, timeout=left + 30
        ) as r:
            for line in r:
                event = json.loads(line)
                if event.get("type") in ("ADDED", "MODIFIED"):
                    see(event["object"], time.time())
                    if len(ready) >= want:
                        break
                elif event.get("type") == "ERROR":
                    break  # e.g. 410 Gone: list again
        if len(ready) >= want:
            break
    except Exception as e:  # a dropped watch: list again
        print(f"wait_ready: {type(e).__name__}: {e}; listing again", file=sys.stderr)
        time.sleep(1)

result = {
    "ready": len(ready),
    "want": want,
    "last_ready_at": max(ready.values()) if ready else None,
    "first_ready_at": min(ready.values()) if ready else None,
    "not_ready_failures": len(failed),
    "failure_examples": sorted(set(failed.values()))[:3],
}
if samples:
    peak = max(samples, key=lambda s: s[1])
    result["rss_peak_sample_kib"] = peak[1]
    result["rss_peak_sample_at"] = peak[0]
    result["vmhwm_kib"] = samples[-1][2]
print(json.dumps(result))
sys.exit(0 if len(ready) >= want else 1)
