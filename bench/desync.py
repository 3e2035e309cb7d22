"""The request-smuggling cases of crates/proxy/tests/desync.rs, sent raw to each proxy in turn,
with a raw-socket target that records the bytes each request brings it. Prints one table:
what the client got (status) and what reached the target, per proxy.

Usage: desync.py TARGET_PORT NAME=PORT [NAME=PORT ...]   (run by bench/desync.sh)
"""
import socket
import sys
import threading
import time

CASES = [
    ("CL + TE", b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("two Content-Lengths", b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 40\r\n\r\nabcd"),
    ("Content-Length +4", b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: +4\r\n\r\nabcd"),
    ("TE chunked, identity", b"POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n"),
    ("obs-fold", b"GET /a HTTP/1.1\r\nHost: a\r\nX-Folded: one\r\n two\r\n\r\n"),
    ("space before colon", b"GET /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n"),
    ("NUL in a value", b"GET /a HTTP/1.1\r\nHost: a\r\nX-Nul: a\0b\r\n\r\n"),
    ("bare LF", b"GET /bare HTTP/1.1\nHost: a\nConnection: close\n\n"),
    ("chunk ext + trailer", b"POST /ext HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n2;name=v\r\nhi\r\n0\r\nX-Trailer: t\r\n\r\n"),
    ("two Hosts", b"GET /a HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n"),
    ("GET with chunked body", b"GET /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
    ("Upgrade: h2c", b"GET /a HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"),
    ("CONNECT", b"CONNECT internal.test:22 HTTP/1.1\r\nHost: internal.test:22\r\n\r\n"),
]

recorded = []
lock = threading.Lock()


def serve(conn):
    seen = b""
    health = None
    conn.settimeout(10)
    try:
        while True:
            data = conn.recv(65536)
            if not data:
                return
            if health is None:
                health = data.startswith(b"GET /health")
            if not health:
                with lock:
                    recorded.append(data)
            seen += data
            while b"\r\n\r\n" in seen:
                _, seen = seen.split(b"\r\n\r\n", 1)
                conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
    except OSError:
        return
    finally:
        conn.close()


def target(port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen(64)
    while True:
        c, _ = s.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()


def send(port, wire):
    s = socket.create_connection(("127.0.0.1", port), timeout=3)
    s.sendall(wire)
    got = b""
    deadline = time.time() + 2
    try:
        while time.time() < deadline:
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
    except OSError:
        pass
    s.close()
    statuses = [line.split(b" ")[1].decode() for line in got.split(b"\r\n") if line.startswith(b"HTTP/1.")]
    return statuses


def main():
    target_port = int(sys.argv[1])
    proxies = [a.split("=") for a in sys.argv[2:]]
    threading.Thread(target=target, args=(target_port,), daemon=True).start()
    time.sleep(2.5)  # health checks turn the target healthy everywhere
    header = "| case | " + " | ".join(name for name, _ in proxies) + " |"
    print(header)
    print("|---" * (len(proxies) + 1) + "|")
    for name, wire in CASES:
        cells = []
        for _, port in proxies:
            with lock:
                recorded.clear()
            statuses = send(int(port), wire)
            time.sleep(0.2)
            with lock:
                seen = b"".join(recorded)
            what = "/".join(statuses) or "no answer"
            if not seen:
                cell = f"{what}, target saw nothing"
            else:
                cell = f"{what}, forwarded"
                if b"smuggled" in seen:
                    cell += " **with the smuggled request**"
                if b"upgrade" in seen.lower():
                    cell += " with Upgrade"
                if b"transfer-encoding" in seen.lower() and b"content-length" in seen.lower():
                    cell += " with both framings"
            cells.append(cell)
        print(f"| {name} | " + " | ".join(cells) + " |")


main()
