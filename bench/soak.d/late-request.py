#!/usr/bin/env python3
"""late-request: shows the mechanism behind bench/soak's reorderings after a network block.

A client sends a request on an established connection while packets to the server are dropped,
gives up after its timeout and closes the socket. With a plain close() the kernel keeps the
unacknowledged request in the orphaned socket and retransmits it (0.2, 0.6, 1.4, ... s after
sending); once the block is lifted the server receives and applies it, although the client has
long given up (and, in omnisync, already sent a newer state of the customer). With SO_LINGER
{1, 0} set before close() the kernel sends RST and discards the queue: the request never arrives.

Usage (root, iptables; the fake Omnidesk running with --api-key k on 127.0.0.1:PORT):
    bench/soak.d/late-request.py PORT
Prints, for each way of closing, how many requests for its customer the fake logged.
"""
import json
import socket
import struct
import subprocess
import sys
import time
import urllib.request


def attempt(port, primary_id, rst):
    rule = ["OUTPUT", "-p", "tcp", "-s", "127.0.0.1", "-d", "127.0.0.1", "--dport", str(port),
            "-m", "comment", "--comment", "omnisync-late-request", "-j", "DROP"]
    sock = socket.create_connection(("127.0.0.1", port))
    subprocess.run(["iptables", "-I"] + rule, check=True)
    try:
        body = "brand_id=1&primary_id=%s&firstname=Ann" % primary_id
        sock.sendall(("POST /api/v2/customer HTTP/1.1\r\nHost: 127.0.0.1\r\napiKey: k\r\n"
                      "Content-Type: application/x-www-form-urlencoded\r\n"
                      "Content-Length: %d\r\n\r\n%s" % (len(body), body)).encode())
        time.sleep(2)  # the client's timeout
        if rst:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
        time.sleep(3)  # the block goes on after the client gave up
    finally:
        subprocess.run(["iptables", "-D"] + rule, check=True)
    time.sleep(15)  # the retransmission 6.2 s or 12.6 s after sending comes after the block
    with urllib.request.urlopen("http://127.0.0.1:%d/_fake/log" % port) as answer:
        log = json.load(answer)
    return sum(1 for r in log["requests"] if r["customer"] == primary_id)


def main():
    if len(sys.argv) != 2 or not sys.argv[1].isdigit():
        sys.exit("usage: late-request.py PORT")
    port = int(sys.argv[1])
    stamp = int(time.time())
    print("plain close():         %d request(s) reached the fake after the client gave up"
          % attempt(port, "LATE%dA" % stamp, False))
    print("SO_LINGER {1, 0} (RST): %d request(s) reached the fake after the client gave up"
          % attempt(port, "LATE%dB" % stamp, True))


if __name__ == "__main__":
    main()
