#!/usr/bin/env python3
"""A plain Python message trace collector, the baseline of `make bench`.

It does the job msgtrace does, the obvious way: an OAuth2 client-credentials token,
the Reporting Web Service MessageTrace feed pulled window by window (`next` links
followed), each page parsed with xml.etree.ElementTree, each entry turned into a JSON
line and sent in Devo's line format over one TLS connection with a client certificate.
It uses `requests` when installed, else urllib (the benchmark says which).

    pycollector.py --url https://127.0.0.1:PORT --ca CA.pem --tenant t1 --secret S \
        --start EPOCH --end EPOCH --window 3600 \
        --out-host 127.0.0.1 --out-port P --out-ca CA --out-cert C --out-key K

Prints `records N requests R http LIB` on stdout at the end. Loopback only.
"""
import argparse
import json
import socket
import ssl
import sys
import time
import xml.etree.ElementTree as ET
from datetime import datetime, timezone

try:
    import requests

    HTTP = "requests"
except ImportError:  # pragma: no cover - depends on the machine
    import urllib.parse
    import urllib.request

    requests = None
    HTTP = "urllib"

ATOM = "{http://www.w3.org/2005/Atom}"
MONTHS = "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()


class Http:
    def __init__(self, ca):
        self.ca = ca
        if requests:
            self.s = requests.Session()
            # per request: REQUESTS_CA_BUNDLE would override a session-wide verify
        else:
            self.ctx = ssl.create_default_context(cafile=ca)

    def post_form(self, url, form):
        if requests:
            r = self.s.post(url, data=form, timeout=60, verify=self.ca)
            r.raise_for_status()
            return r.json()
        data = urllib.parse.urlencode(form).encode()
        with urllib.request.urlopen(url, data=data, context=self.ctx, timeout=60) as r:
            return json.loads(r.read())

    def get(self, url, token):
        h = {"Authorization": "Bearer " + token}
        if requests:
            r = self.s.get(url, headers=h, timeout=60, verify=self.ca)
            r.raise_for_status()
            return r.content
        req = urllib.request.Request(url, headers=h)
        with urllib.request.urlopen(req, context=self.ctx, timeout=60) as r:
            return r.read()


def odata(ts):
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def local(tag):
    return tag.rsplit("}", 1)[-1]


def entry_record(entry):
    rec = {}
    for content in entry.iter(ATOM + "content"):
        for props in content:
            for p in props:
                name = local(p.tag)
                nil = p.get("{http://schemas.microsoft.com/ado/2007/08/dataservices/metadata}null")
                if nil == "true":
                    rec[name] = None
                elif name in ("Size", "Index"):
                    rec[name] = int(p.text)
                else:
                    rec[name] = p.text or ""
    return rec


def main():
    a = argparse.ArgumentParser()
    for k in ("url", "ca", "tenant", "secret", "out-host", "out-ca", "out-cert", "out-key"):
        a.add_argument("--" + k, required=True)
    for k in ("start", "end", "window", "out-port"):
        a.add_argument("--" + k, type=int, required=True)
    o = a.parse_args()
    http = Http(o.ca)
    tok = http.post_form(
        f"{o.url}/{o.tenant}/oauth2/token",
        {
            "grant_type": "client_credentials",
            "client_id": "client-" + o.tenant,
            "client_secret": o.secret,
            "resource": "https://outlook.office365.com",
        },
    )["access_token"]
    ctx = ssl.create_default_context(cafile=o.out_ca)
    ctx.load_cert_chain(o.out_cert, o.out_key)
    raw = socket.create_connection((o.out_host, o.out_port), timeout=60)
    out = ctx.wrap_socket(raw, server_hostname=o.out_host)
    host = socket.gethostname()
    records = requests_made = 0
    buf = []
    start = o.start
    while start < o.end:
        end = min(start + o.window, o.end)
        url = (
            f"{o.url}/ecp/reportingwebservice/reporting.svc/MessageTrace?$filter="
            f"StartDate%20eq%20datetime'{odata(start)}'%20and%20EndDate%20eq%20datetime'{odata(end)}'"
        )
        while url:
            body = http.get(url, tok)
            requests_made += 1
            feed = ET.fromstring(body)
            now = time.gmtime()
            prefix = "<14>%s %2d %s %s cloud.office365.messagetracing: " % (
                MONTHS[now.tm_mon - 1],
                now.tm_mday,
                time.strftime("%H:%M:%S", now),
                host,
            )
            for entry in feed.iter(ATOM + "entry"):
                rec = entry_record(entry)
                rec["@devo_pulling_id"] = int(time.time() * 1000)
                buf.append(prefix + json.dumps(rec, separators=(",", ":"), ensure_ascii=False) + "\n")
                records += 1
            if buf:
                out.sendall("".join(buf).encode())
                buf.clear()
            url = None
            for link in feed.findall(ATOM + "link"):
                if link.get("rel") == "next":
                    url = link.get("href")
                    base = feed.get("{http://www.w3.org/XML/1998/namespace}base")
                    if not url.startswith("https://") and base:
                        url = base.rstrip("/") + "/" + url
        start = end
    out.close()
    print(f"records {records} requests {requests_made} http {HTTP}")


if __name__ == "__main__":
    sys.exit(main())
