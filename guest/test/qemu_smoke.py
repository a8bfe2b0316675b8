#!/usr/bin/env python3
"""Smoke test of the Godwit test guest under QEMU/KVM.

    python3 guest/test/qemu_smoke.py [--smp N] [--net] [--keep-log FILE]

Boots build/guest.elf, checks READY, heartbeat rate and continuity, CPU lines,
W/V (including a POKEd page that must fail), the virtio-blk round trip (host-side
pattern and CRC check), and OFF. With --net (root needed) it creates the network
namespace gwguest-smoke with a TAP device, runs QEMU inside it, pings the guest
(raw ICMP) and exercises UDP echo, then deletes the namespace. Exit status 0 = pass.
"""
import argparse, os, queue, re, socket, struct, subprocess, sys, tempfile, threading, time, zlib

HERE = os.path.dirname(os.path.abspath(__file__))
ELF = os.path.join(HERE, "..", "build", "guest.elf")
M = (1 << 64) - 1
NS = "gwguest-smoke"


def mix64(x):
    x ^= x >> 30; x = (x * 0xBF58476D1CE4E5B9) & M
    x ^= x >> 27; x = (x * 0x94D049BB133111EB) & M
    return x ^ (x >> 31)


def blk_sector(seed, s):
    h = mix64(mix64(seed) ^ ((s + 0x9E3779B97F4A7C15) & M))
    return b"".join(((h + i * 0xD6E8FEB86659FD93) & M).to_bytes(8, "little") for i in range(64))


class Guest:
    def __init__(self, argv, log):
        self.t0 = time.monotonic()
        self.p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.lines, self.q, self.log = [], queue.Queue(), log
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        buf = b""
        while True:
            chunk = self.p.stdout.read1(4096)
            if not chunk:
                self.q.put(None)
                return
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                s = line.decode(errors="replace").rstrip("\r")
                t = time.monotonic() - self.t0
                self.lines.append((t, s))
                self.log.write("%.3f %s\n" % (t, s))
                self.q.put((t, s))

    def expect(self, pattern, timeout=60):
        rx, end = re.compile(pattern), time.monotonic() + timeout
        while True:
            try:
                item = self.q.get(timeout=max(0.01, end - time.monotonic()))
            except queue.Empty:
                raise AssertionError("timeout waiting for %r" % pattern)
            if item is None:
                raise AssertionError("guest exited while waiting for %r" % pattern)
            if rx.search(item[1]):
                return item[1]

    def cmd(self, line, pattern, timeout=60):
        self.p.stdin.write((line + "\n").encode())
        self.p.stdin.flush()
        reply = self.expect(pattern, timeout)
        print("  %-24s -> %s" % (line, reply))
        return reply

    def hb(self):
        return [(t, [int(x) for x in s.split()[1:]]) for t, s in self.lines if re.match(r"HB (\d+) (\d+) (\d+)\s*$", s)]


def check(cond, what):
    print(("PASS " if cond else "FAIL ") + what)
    if not cond:
        check.failed = True
check.failed = False


def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


NET_PROBE = r'''
import socket, struct, sys
def csum(b):
    if len(b) % 2: b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16: s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF
ok = 0
r = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP); r.settimeout(2)
for seq, size in enumerate((0, 1, 56, 1000, 1472)):
    payload = bytes((i * 7 + seq) & 255 for i in range(size))
    hdr = struct.pack("!BBHHH", 8, 0, 0, 0x4747, seq)
    r.sendto(hdr[:2] + struct.pack("!H", csum(hdr + payload)) + hdr[4:] + payload, ("10.99.1.2", 0))
    try:
        while True:
            d = r.recv(4096); ihl = (d[0] & 15) * 4; icmp = d[ihl:]
            if icmp[0] == 0 and struct.unpack("!HH", icmp[4:8]) == (0x4747, seq):
                ok += icmp[8:] == payload and csum(icmp) == 0 and csum(d[:ihl]) == 0; break
    except socket.timeout: pass
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(2); u.bind(("10.99.1.1", 0))
uok = 0
for i in range(5):
    msg = b"godwit-%d-" % i * (i * 40 + 1)
    u.sendto(msg, ("10.99.1.2", 7))
    try:
        d, a = u.recvfrom(4096); uok += d == msg and a == ("10.99.1.2", 7)
    except socket.timeout: pass
print(ok, uok)
'''


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--smp", type=int, default=2)
    ap.add_argument("--mem", default="256")
    ap.add_argument("--net", action="store_true")
    ap.add_argument("--keep-log", default=None)
    args = ap.parse_args()

    img = tempfile.NamedTemporaryFile(prefix="gwsmoke-", suffix=".img", delete=False)
    img.truncate(16 << 20)
    img.close()
    log = open(args.keep_log or os.devnull, "w")
    ip = "10.99.1.2"
    qemu = ["qemu-system-x86_64", "-enable-kvm", "-cpu", "host,-arch-capabilities", "-m", args.mem,
            "-smp", str(args.smp), "-display", "none", "-serial", "stdio", "-monitor", "none", "-no-reboot",
            "-kernel", ELF, "-append", "cpus=%d ip=%s" % (args.smp, ip),
            "-device", "isa-debug-exit,iobase=0xf4,iosize=1",
            "-drive", "file=%s,format=raw,if=none,id=d0" % img.name,
            "-device", "virtio-blk-pci,disable-modern=on,drive=d0"]
    prefix = []
    if args.net:
        for c in (["ip", "netns", "add", NS], ["ip", "-n", NS, "link", "set", "lo", "up"],
                  ["ip", "-n", NS, "tuntap", "add", "dev", "gwsmoke0", "mode", "tap"],
                  ["ip", "-n", NS, "addr", "add", "10.99.1.1/24", "dev", "gwsmoke0"],
                  ["ip", "-n", NS, "link", "set", "gwsmoke0", "up"]):
            subprocess.run(c, check=True)
        prefix = ["ip", "netns", "exec", NS]
        qemu += ["-device", "virtio-net-pci,disable-modern=on,netdev=n0,mac=52:54:00:12:34:56",
                 "-netdev", "tap,id=n0,ifname=gwsmoke0,script=no,downscript=no"]
    g = Guest(prefix + qemu, log)
    try:
        banner = g.expect(r"^GODWIT-GUEST v1 ", 60)
        tb = g.lines[-1][0]
        g.expect(r"^READY$", 60)
        print("  banner -> READY %.0f ms" % ((g.lines[-1][0] - tb) * 1000))
        check(("cpus=%d" % args.smp) in banner, "banner: " + banner)
        g.cmd("STATUS", r"^STATUS ")
        time.sleep(2.0)
        st = g.cmd("STATUS", r"^STATUS ")
        check(("cpus=%d " % args.smp) in st, "all vCPUs online")
        hb = g.hb()
        seqs = [v[0] for t, v in hb]
        check(seqs == list(range(seqs[0], seqs[0] + len(seqs))) and seqs[0] == 0, "HB seq from 0 without gaps (%d lines)" % len(seqs))
        rate = (len(hb) - 1) / (hb[-1][0] - hb[0][0])
        check(85 <= rate <= 115, "HB rate %.1f/s" % rate)
        cpu = [list(map(int, s.split()[1:])) for t, s in g.lines if s.startswith("CPU ")]
        check(len(cpu) >= 10 and len(cpu[-1]) == args.smp + 1 and all(b > a for a, b in zip(cpu[-10][1:], cpu[-1][1:])),
              "CPU lines advance on every vCPU: %s" % cpu[-1])

        g.cmd("W 64 64 0", r"^ACK W 64 64 0 ")
        time.sleep(1.0)
        hb = g.hb()[-50:]
        pps = (hb[-1][1][2] - hb[0][1][2]) / (hb[-1][0] - hb[0][0])
        print("  flat out: %.0f pages/s" % pps)
        check(pps > 10000, "workload dirties pages")
        check(g.cmd("V", r"^VERIFY ").startswith("VERIFY OK 16384"), "verify after a W 64 64 0 run")
        g.cmd("WPAUSE", r"^WPAUSE OK")
        g.cmd("POKE 0x2345000", r"^POKE ")
        check(g.cmd("V", r"^VERIFY ").startswith("VERIFY FAIL 1 first=0x2345000 "), "verify catches a damaged page")
        g.cmd("W 0 0 0", r"^ACK W 0 0 0 ")

        r = g.cmd("BLKW 10 40 4242", r"^BLKW ")
        want = b"".join(blk_sector(4242, 10 + i) for i in range(40))
        with open(img.name, "rb") as f:
            f.seek(10 * 512)
            disk = f.read(40 * 512)
        check(r == "BLKW OK 10 40 %08x" % zlib.crc32(want) and disk == want, "BLKW pattern and CRC match the host's")
        check(g.cmd("BLKR 10 40", r"^BLKR ") == "BLKR 10 40 %08x" % zlib.crc32(want), "BLKR CRC")
        check(g.cmd("BLKV 10 40 4242", r"^BLKV ") == "BLKV OK 10 40", "BLKV OK")
        check(g.cmd("BLKV 10 40 4243", r"^BLKV ").startswith("BLKV FAIL 10 40 bad=40"), "BLKV FAIL on wrong seed")

        if args.net:
            out = subprocess.run(prefix + [sys.executable, "-c", NET_PROBE], capture_output=True, text=True).stdout.split()
            check(out == ["5", "5"], "ICMP echo 5/5 and UDP echo 5/5 (%s)" % out)
            g.cmd("NETSTAT", r"^NETSTAT ")
        check(g.cmd("NOPE", r"^ERR ") == "ERR unknown command NOPE", "unknown command")
        g.p.stdin.write(b"OFF\n")
        g.p.stdin.flush()
        g.p.wait(15)
        check(g.p.returncode == 1, "OFF powers off (isa-debug-exit status 1)")
    except AssertionError as e:
        check(False, str(e))
    finally:
        if g.p.poll() is None:
            g.p.kill()
        if args.net:
            subprocess.run(["ip", "netns", "del", NS])
        os.unlink(img.name)
    print("RESULT", "FAIL" if check.failed else "PASS")
    return 1 if check.failed else 0


if __name__ == "__main__":
    sys.exit(main())
