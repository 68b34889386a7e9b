"""Average bytes per packet a pcap spends beyond the payload: record header + IP + TCP/UDP headers."""
import struct
import sys

packets = overhead = 0
for path in sys.argv[1:]:
    with open(path, "rb") as f:
        f.read(24)
        while True:
            rec = f.read(16)
            if len(rec) < 16:
                break
            incl = struct.unpack("<IIII", rec)[2]
            data = f.read(incl)
            if data[0] >> 4 == 4:
                ip, proto = (data[0] & 15) * 4, data[9]
            else:
                ip, proto = 40, data[6]
            l4 = (data[ip + 12] >> 4) * 4 if proto == 6 else 8
            packets += 1
            overhead += 16 + ip + l4
print(f"{overhead / packets:.1f}" if packets else "-")
