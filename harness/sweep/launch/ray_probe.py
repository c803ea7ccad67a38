"""Is a Ray cluster answering at an address? A TCP connect plus one gRPC call, in a few seconds.

``ray.init`` retries an address for about 20 s (printing a warning per try) before it gives up, and a
bare TCP probe is not enough either: a firewall or an egress proxy may accept every connection. So
the probe speaks just enough HTTP/2 to make one unary gRPC call (GCS ``GetClusterId``) and accepts
any answer of a gRPC server (HTTP status 200, even "unimplemented" from a Ray Client server); an
HTTP error, a reset or silence means no Ray cluster is there.
"""
from __future__ import annotations

import os
import socket
import struct
import time

PROBE_TIMEOUT_S = 3.0  # the whole probe; the CLI's one-line error comes well within 5 s
_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_DATA, _HEADERS, _RST_STREAM, _SETTINGS, _GOAWAY = 0, 1, 3, 4, 7
_END_STREAM, _END_HEADERS, _ACK = 0x1, 0x4, 0x1
_STATUS_200 = 0x88  # HPACK static table entry 8, ":status: 200", as every gRPC server sends it


def _frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def _header(name: str, value: str) -> bytes:
    """An HPACK "literal header field without indexing, new name" (short plain strings)."""
    n, v = name.encode(), value.encode()
    return b"\x00" + bytes([len(n)]) + n + bytes([len(v)]) + v


def _status_byte(block: bytes) -> int | None:
    """The first header representation of an HPACK block, past any dynamic-table size updates."""
    i = 0
    while i < len(block) and block[i] & 0xE0 == 0x20:  # 001xxxxx: size update, 5-bit prefix integer
        i += 1
        if block[i - 1] & 0x1F == 0x1F:
            while i < len(block) and block[i] & 0x80:
                i += 1
            i += 1
    return block[i] if i < len(block) else None


def _grpc_answers(sock: socket.socket, authority: str, deadline: float) -> str:
    """"" when a gRPC server answers one call on ``sock``, else what came back instead."""
    headers = b"".join(_header(k, v) for k, v in (
        (":method", "POST"), (":scheme", "http"), (":path", "/ray.rpc.NodeInfoGcsService/GetClusterId"),
        (":authority", authority), ("content-type", "application/grpc"), ("te", "trailers")))
    sock.sendall(_PREFACE + _frame(_SETTINGS, 0, 0) + _frame(_HEADERS, _END_HEADERS, 1, headers)
                 + _frame(_DATA, _END_STREAM, 1, b"\x00" * 5))  # an empty request message
    buf = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return "no answer to a gRPC call"
        sock.settimeout(left)
        chunk = sock.recv(65536)
        if not chunk:
            return "the connection was closed without an answer"
        buf += chunk
        while len(buf) >= 9:
            size = int.from_bytes(buf[:3], "big")
            if len(buf) < 9 + size:
                break
            kind, flags = buf[3], buf[4]
            stream = int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF
            payload, buf = buf[9:9 + size], buf[9 + size:]
            if kind == _SETTINGS and not flags & _ACK:
                sock.sendall(_frame(_SETTINGS, _ACK, 0))
            elif kind == _HEADERS and stream == 1:
                return "" if _status_byte(payload) == _STATUS_200 else "an HTTP error, not a gRPC answer"
            elif kind in (_RST_STREAM, _GOAWAY):
                return "the call was refused"


def unreachable(host: str, port: int, timeout_s: float = PROBE_TIMEOUT_S) -> str:
    """Why no Ray cluster answers at ``host:port`` ("" when one does), within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            if os.environ.get("RAY_USE_TLS", "0").lower() not in ("", "0", "false"):
                return ""  # a TLS cluster: the plain-text call cannot tell; ray.init will
            why = _grpc_answers(sock, f"{host}:{port}", deadline)
    except TimeoutError:
        return f"nothing answers at {host}:{port} within {timeout_s:.0f} s"
    except OSError as exc:
        return f"nothing answers at {host}:{port} ({exc.strerror or type(exc).__name__})"
    return f"no Ray cluster answers at {host}:{port} ({why})" if why else ""
