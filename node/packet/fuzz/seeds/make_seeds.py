"""Writes seed inputs for the fuzz targets (run from this directory: python3 make_seeds.py).

decode/*:    control byte, 2-byte extra wire length, then an Ethernet frame.
processor/*: records of `len_lo, len_hi, time_step, control` + frame (see the targets' docs).
The frames are built from RFC 791 (IPv4), RFC 8200 (IPv6), RFC 9293 (TCP) and RFC 768
(UDP) header layouts; checksums are left zero (nothing checks them).
"""
import os
import struct

CLIENT = (bytes([10, 0, 0, 1]), 40000)
SERVER = (bytes([10, 0, 0, 2]), 80)
SYN, ACK, PSH, FIN, RST = 0x02, 0x10, 0x08, 0x01, 0x04


def ethernet(ethertype, payload):
    return bytes(12) + struct.pack("!H", ethertype) + payload


def ipv4(src, dst, protocol, segment):
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(segment), 1, 0x4000, 64, protocol, 0, src, dst)
    return ethernet(0x0800, header + segment)


def ipv6(src, dst, protocol, segment):
    header = struct.pack("!IHBB16s16s", 6 << 28, len(segment), protocol, 64, src, dst)
    return ethernet(0x86DD, header + segment)


def tcp(src, dst, seq, ack, flags, payload=b"", window=1000):
    header = struct.pack("!HHIIBBHHH", src[1], dst[1], seq, ack, 5 << 4, flags, window, 0, 0)
    return ipv4(src[0], dst[0], 6, header + payload)


def udp(src, dst, payload):
    header = struct.pack("!HHHH", src[1], dst[1], 8 + len(payload), 0)
    return ipv4(src[0], dst[0], 17, header + payload)


def record(frame, step=1, control=0):
    return struct.pack("<HBB", len(frame), step, control) + frame


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as file:
        file.write(data)


request = b"GET /index.html HTTP/1.1\r\nHost: example\r\n\r\n"
response = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"
c, s = 1000, 5000
http = [
    tcp(CLIENT, SERVER, c, 0, SYN),
    tcp(SERVER, CLIENT, s, c + 1, SYN | ACK),
    tcp(CLIENT, SERVER, c + 1, s + 1, ACK),
    tcp(CLIENT, SERVER, c + 21, s + 1, ACK | PSH, request[20:]),
    tcp(CLIENT, SERVER, c + 1, s + 1, ACK | PSH, request[:20]),
    tcp(SERVER, CLIENT, s + 1, c + 1 + len(request), ACK | PSH, response),
    tcp(SERVER, CLIENT, s + 1, c + 1 + len(request), ACK | PSH, response),
    tcp(CLIENT, SERVER, c + 1 + len(request), s + 1 + len(response), FIN | ACK),
    tcp(SERVER, CLIENT, s + 1 + len(response), c + 2 + len(request), FIN | ACK),
    tcp(CLIENT, SERVER, c + 2 + len(request), s + 2 + len(response), ACK),
]
write("processor/http_exchange", b"".join(record(frame, 1, 2) for frame in http))
refused = [tcp(CLIENT, SERVER, c, 0, SYN), tcp(SERVER, CLIENT, 0, c + 1, RST | ACK)]
write("processor/refused", b"".join(record(frame, 1, 3) for frame in refused) + record(b"", 200, 2))
write("processor/dns", record(udp((CLIENT[0], 53000), (SERVER[0], 53), b"\x12\x34\x01\x00" + bytes(8))))
for name, frame in [
    ("tcp_syn", tcp(CLIENT, SERVER, c, 0, SYN)),
    ("tcp_data", http[3]),
    ("udp", udp(CLIENT, SERVER, b"hello")),
    ("tcp_ipv6", ipv6(bytes(15) + b"\x01", bytes(15) + b"\x02", 6, struct.pack("!HHIIBBHHH", 1, 2, 3, 4, 0x50, ACK, 9, 0, 0) + b"data")),
]:
    write("decode/" + name, b"\x00\x00\x00" + frame)
