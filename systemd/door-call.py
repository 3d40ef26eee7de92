#!/usr/bin/env python3
"""A door rings, a panel answers and opens the door: the door opener's path
through a running intercomd, for check-in-container.sh (Python's standard
library only: the container's network namespace is entered from the host).

    python3 systemd/door-call.py PORT PIN

Prints the answer of POST /api/door/open and what the door station was told;
exits 0 when the door opened and the station heard of it.
"""
import base64
import http.client
import json
import os
import socket
import struct
import sys

TIMEOUT = 10


class Peer:
    """A WebSocket client of /ws, just enough for text frames."""

    def __init__(self, port, query):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET /ws?{query} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(1)
            if not chunk:
                raise SystemExit(f"the upgrade of /ws?{query} ended early")
            head += chunk
        if not head.startswith(b"HTTP/1.1 101"):
            raise SystemExit(f"the upgrade of /ws?{query} failed: {head!r}")

    def send(self, message):
        payload = json.dumps(message).encode()
        mask = os.urandom(4)
        header = bytes([0x81])
        if len(payload) < 126:
            header += bytes([0x80 | len(payload)])
        else:
            header += bytes([0x80 | 126]) + struct.pack("!H", len(payload))
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def exact(self, count):
        data = b""
        while len(data) < count:
            chunk = self.sock.recv(count - len(data))
            if not chunk:
                raise SystemExit("the WebSocket ended")
            data += chunk
        return data

    def recv(self):
        first, second = self.exact(2)
        length = second & 0x7F
        if length == 126:
            length = struct.unpack("!H", self.exact(2))[0]
        elif length == 127:
            length = struct.unpack("!Q", self.exact(8))[0]
        payload = self.exact(length)
        if first & 0x0F == 0x9:  # a ping: answer, read on
            self.sock.sendall(bytes([0x8A, 0x80 | length]) + b"\0\0\0\0" + payload)
            return self.recv()
        return json.loads(payload)

    def recv_type(self, kind):
        while True:
            message = self.recv()
            if message.get("type") == kind:
                return message


def main():
    port, pin = int(sys.argv[1]), sys.argv[2]
    door = Peer(port, "id=door&room=home&token=t-door")
    assert door.recv()["type"] == "welcome"
    kitchen = Peer(port, "id=kitchen&room=home&token=t-kitchen")
    assert kitchen.recv()["type"] == "welcome"
    door.send({"type": "call-request", "to": "*", "call": "c1", "media": "video", "ring": "room"})
    kitchen.recv_type("call-request")
    kitchen.send({"type": "call-accept", "to": "door", "call": "c1", "media": "video"})
    door.recv_type("call-accept")
    body = json.dumps({"door": "door", "id": "kitchen", "token": "t-kitchen", "pin": pin})
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    connection.request("POST", "/api/door/open", body, {"Content-Type": "application/json"})
    response = connection.getresponse()
    answer = response.read().decode()
    print(f"POST /api/door/open: {response.status} {answer}")
    told = door.recv_type("door-opened")
    print(f"the door station was told: {json.dumps(told)}")
    return 0 if response.status == 200 and told.get("by") == "kitchen" else 1


if __name__ == "__main__":
    sys.exit(main())
