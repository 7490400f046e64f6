#!/usr/bin/env python3
"""Writes the seed corpora under corpus/<target>/ (committed; run from fuzz/ after changing it).

Most targets take `knob, count, sizes[count], payload` (src/lib.rs): `knob` is the target's own
choice, the sizes (each byte + 1) cut the payload into the pieces it is fed in."""
import os

HERE = os.path.dirname(os.path.abspath(__file__))


def framed(knob, sizes, payload):
    if isinstance(payload, str):
        payload = payload.encode()
    return bytes([knob, len(sizes)] + [s - 1 for s in sizes]) + payload


def write(target, seeds):
    folder = os.path.join(HERE, "corpus", target)
    os.makedirs(folder, exist_ok=True)
    for name, data in seeds.items():
        with open(os.path.join(folder, name), "wb") as f:
            f.write(data if isinstance(data, bytes) else data.encode())


AUTH = "authorization: Bearer fuzz-token\r\n"
TOKEN = '{"clientId":"user-42","firstName":"Jonas","country":"LT"}'

REQUESTS = {
    "get": "GET /api/v2/status HTTP/1.1\r\nHost: gw\r\n{auth}\r\n",
    "post-token": "POST /api/v2/token HTTP/1.1\r\nHost: gw\r\n{auth}Content-Type: application/json\r\n"
    "Content-Length: %d\r\n\r\n%s" % (len(TOKEN), TOKEN),
    "pipelined": "POST /api/v2/status HTTP/1.1\r\nhost: gw\r\n{auth}content-length: 2\r\n\r\n{}"
    "GET /api/v2/data?x=1 HTTP/1.1\r\nhost: gw\r\n{auth}connection: close\r\n\r\n",
    "chunked": "POST /api/v2/status HTTP/1.1\r\nhost: gw\r\n{auth}transfer-encoding: chunked\r\n\r\n"
    "2\r\n{}\r\n0\r\n\r\n",
    "cl-te": "POST /api/v2/status HTTP/1.1\r\nhost: gw\r\n{auth}content-length: 6\r\n"
    "transfer-encoding: chunked\r\n\r\n0\r\n\r\nX",
    "two-lengths": "POST /api/v2/status HTTP/1.1\r\nhost: gw\r\n{auth}content-length: 2\r\n"
    "content-length: 3\r\n\r\n{}x",
    "http10": "POST /api/v2/status HTTP/1.0\r\n{auth}content-length: 2\r\n\r\n{}",
    "obs-fold": "GET /api/v2/status HTTP/1.1\r\nhost: gw\r\nx-a: one\r\n two\r\n{auth}\r\n",
    "expect": "POST /api/v2/status HTTP/1.1\r\nhost: gw\r\n{auth}expect: 100-continue\r\n"
    "content-length: 2\r\n\r\n{}",
    "absolute-form": "GET http://gw/api/v2/status HTTP/1.1\r\nhost: gw\r\n{auth}\r\n",
    "h2c-preface": "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    "bare-lf": "GET /api/v2/status HTTP/1.1\nhost: gw\n{auth}\n",
    "malformed": "GET  /api/v2/status HTTP/1.1\r\nhost: gw\r\n\r\n",
    "upgrade": "GET /api/v2/status HTTP/1.1\r\nhost: gw\r\n{auth}connection: upgrade\r\nupgrade: h2c\r\n\r\n",
}

# request_head: knob 10 = max_head 4 KiB, max_body 1 MiB; 0 = 64 bytes, no body.
write("request_head", {
    **{name: framed(10, [], text.replace("{auth}", "")) for name, text in REQUESTS.items()},
    "get-bytewise": framed(10, [1], REQUESTS["get"].replace("{auth}", "")),
    "post-token-split": framed(10, [3, 17, 1], REQUESTS["post-token"].replace("{auth}", "")),
    "post-tiny-limits": framed(0, [5], REQUESTS["post-token"].replace("{auth}", "")),
})
write("listener", {
    **{name: framed(0, [], text.replace("{auth}", AUTH)) for name, text in REQUESTS.items()},
    "post-token-split": framed(0, [3, 17, 1], REQUESTS["post-token"].replace("{auth}", AUTH)),
    "unauthenticated": framed(0, [], REQUESTS["post-token"].replace("{auth}", "")),
})

OK = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n{\"ok\":true}"
RESPONSES = {
    "ok": (0, OK),
    "ok-then-next": (0, OK + "HTTP/1.1 204 No Content\r\n\r\n"),
    "chunked": (0, "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n4;x=y\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\ntrailer: t\r\n\r\n"),
    "interim": (2, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n" + OK),
    "no-content": (0, "HTTP/1.1 204 No Content\r\ncontent-length: 5\r\n\r\n"),
    "not-modified": (0, "HTTP/1.1 304 Not Modified\r\ntransfer-encoding: chunked\r\n\r\n"),
    "head": (1, "HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n"),
    "until-close": (0, "HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nall of it"),
    "http10-keep-alive": (0, "HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 2\r\n\r\n{}"),
    "cl-and-te": (0, "HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n"),
    "list-length": (0, "HTTP/1.1 200 OK\r\ncontent-length: 2, 2\r\n\r\n{}"),
    "too-many-requests": (2, "HTTP/1.1 429 Too Many Requests\r\nretry-after: 3\r\ncontent-length: 0\r\n\r\n"),
    "gzip-te": (0, "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n"),
}
write("response_codec", {
    **{name: framed(knob, [], text) for name, (knob, text) in RESPONSES.items()},
    "chunked-bytewise": framed(0, [1], RESPONSES["chunked"][1]),
    "interim-split": framed(2, [7, 30], RESPONSES["interim"][1]),
})

write("chunked", {
    "simple": framed(0, [], "4\r\nWiki\r\n5\r\npedia\r\n0\r\n\r\n"),
    "extensions-trailers": framed(0, [2], "4;a=b\r\nWiki\r\nA ; x\r\n0123456789\r\n0\r\nt: 1\r\n\r\nNEXT"),
    "bare-lf": framed(0, [1], "3\nabc\n0\n\n"),
    "upper-hex": framed(0, [], "1F\r\n" + "x" * 31 + "\r\n0\r\n\r\n"),
    "bad-data-end": framed(0, [], "3\r\nabcX\r\n0\r\n\r\n"),
    "roundtrip": framed(0x80, [5, 1, 64], "a body cut in chunks of several sizes, fed in pieces"),
    "roundtrip-spelled": framed(0x80 | 0x1F, [2, 3], '{"clientId":"user-42"}'),
})

write("retry_after", {
    "seconds": b"\x00\x00\x00\x65" + b"120",
    "spaces": b"\x00\x00\x00\x65" + b" 0 ",
    "http-date": b"\x00\xf0\x1a\x56" + b"Wed, 21 Oct 2015 07:28:00 GMT",
    "rfc850-date": b"\x00\xf0\x1a\x56" + b"Wednesday, 21-Oct-15 07:28:00 GMT",
    "asctime-date": b"\x00\xf0\x1a\x56" + b"Wed Oct 21 07:28:00 2015",
    "negative": b"\x00\x00\x00\x00" + b"-1",
    "huge": b"\x00\x00\x00\x00" + b"99999999999999999999999",
})

ROOT = os.path.dirname(HERE)
write("config", {
    name: open(os.path.join(ROOT, "config", name + ".toml")).read()
    for name in ["sidecar", "shared-gateway", "demo"]
})

write("token_body", {
    "kyc": b"\x00" + TOKEN.encode(),
    "kyc-full": b"\x00" + b'{"clientId":"c-1","firstName":"A","lastName":"B","successUrl":"https://a.example/ok",'
    b'"callbackUrl":"https://a.example/cb","locale":"en","sessionLength":600,"country":"LT",'
    b'"nationality":"LT","dateOfBirth":"1990-01-31","sex":"M","generateDigitString":true}',
    "kyc-person-scan-ref": b"\x00" + b'{"personScanRef":"p-1"}',
    "kyc-numeric-id": b"\x00" + b'{"clientId":12345}',
    "kyc-bad-sex": b"\x00" + b'{"clientId":"x","sex":"X"}',
    "kyb": b"\x01" + b'{"clientId":"biz-1","tokenType":"FORM"}',
    "not-an-object": b"\x00" + b"[1,2,3]",
    "other-route": b"\x02" + b'{"scanRef":"s"}',
})
