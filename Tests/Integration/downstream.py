"""Real downstream parts for the delivery tests: DNS that the queue runner resolves through, and SMTP
servers it delivers to.

- `Dnsmasq`: a private dnsmasq on 127.0.0.1 and a free UDP+TCP port serving MX, A, AAAA, CNAME, TLSA,
  TXT and raw records, Null MX, NXDOMAIN, SERVFAIL, REFUSED and a timeout, from a list of record
  tuples; `upstream` is the `127.0.0.1@PORT` form ub_ctx_set_fwd takes.
- `SinkServer`: a downstream SMTP server in Python threads on a chosen 127.0.0.x (or ::1) address,
  port 0 or a fixed one such as 25, with behaviours set per instance and changeable while it runs
  (4xx/5xx at MAIL, RCPT, DATA or after the dot, per-recipient replies, STARTTLS, the offered
  extensions, a close in the middle of DATA, silence, a closed port). It records every connection
  and transaction.
- `PostfixSink`: Postfix's smtp-sink in the foreground, counting messages and dumping each one.

Like the harness: processes are stopped by PID (SIGTERM, wait, SIGKILL), every wait and loop is
bounded in count and time, temporary folders go away with the test, and a missing tool is a failure.
Each class takes the test case (`self`) or, from setUpClass, the test class (`cls`); cleanups are
registered on it either way. Traffic stays on 127.0.0.0/8 and ::1.

libunbound and the test DNS server (measured with libunbound 1.17 and dnsmasq 2.90):
- libunbound blocks `test.` by default (an RFC 6761 local zone answering NXDOMAIN without asking the
  forwarder). `local-zone: "test." nodefault` works from a file loaded with ub_ctx_config, but NOT
  through ub_ctx_set_option (accepted, no effect); `ub_ctx_zone_remove(ctx, "test.")` also works, and
  finalizes the context, so it must come after ub_ctx_set_option and ub_ctx_set_fwd.
- `do-not-query-localhost` is already `no` in a libunbound context: ub_ctx_set_fwd("127.0.0.1@PORT")
  reaches a server on loopback without it (setting it to `yes` does block it, from either place).
- A timeout (no answer) is SERVFAIL after about 17 s with the defaults, and two in a row mark the one
  forwarder down: every later query, other domains too, is SERVFAIL at once (for up to
  infra-host-ttl, 900 s). `outbound-msg-retry: 1` with `infra-host-ttl: 1` (both work through
  ub_ctx_set_option) gives SERVFAIL in 0.1-3.5 s and the other domains keep working, even after six
  timeouts in a row; `outbound-msg-retry: 1` alone still marks the forwarder down after a few
  timeouts in a row, and `infra-keep-probing: yes` does not help.
- On SERVFAIL the result's `data` array is NULL, not an empty list.
`Dnsmasq.unbound_conf()` writes a libunbound file with these settings.
"""

import dataclasses
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import tempfile
import threading
import time
import traceback

from harness import (ManagedProcess, add_cleanup as _add_cleanup, owner_workdir as _workdir, require_tool,  # noqa: F401
                     sbin_tool as _sbin_tool, stop_process as _stop_process, workdir)

START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0
TOOL_TIMEOUT = 20.0
IO_TIMEOUT = 5.0


# MARK: Helpers (as in backends.py)









def _family(host):
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def free_udp_tcp_port(host="127.0.0.1"):
    """A port free for both UDP and TCP on `host` right now (the kernel's pick for TCP port 0)."""
    for _ in range(50):
        with socket.socket(_family(host), socket.SOCK_STREAM) as t:
            t.bind((host, 0))
            port = t.getsockname()[1]
        if port_free(host, port):
            return port
    raise AssertionError(f"no port free for both UDP and TCP on {host}")


def port_free(host, port):
    """True when both a UDP and a TCP socket can bind host:port now."""
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(_family(host), kind) as s:
            try:
                s.bind((host, port))
            except OSError:
                return False
    return True


def listening(host, port):
    """True when a TCP socket listens on host:port (read from /proc/net/tcp*, without connecting)."""
    if ":" in host:
        raw = socket.inet_pton(socket.AF_INET6, host)
        want = "".join(raw[i:i + 4][::-1].hex().upper() for i in range(0, 16, 4))
        files, wild = ("/proc/net/tcp6",), "0" * 32
    else:
        want = socket.inet_pton(socket.AF_INET, host)[::-1].hex().upper()
        files, wild = ("/proc/net/tcp",), "0" * 8
    suffix = f"{port:04X}"
    for path in files:
        try:
            with open(path) as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if len(parts) < 4 or parts[3] != "0A":
                continue
            addr, _, p = parts[1].partition(":")
            if p == suffix and addr in (want, wild):
                return True
    return False


# MARK: DNS on the wire (a tiny client for readiness and checks)

QTYPES = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "PTR": 12, "MX": 15, "TXT": 16, "AAAA": 28, "SRV": 33,
          "DS": 43, "RRSIG": 46, "DNSKEY": 48, "TLSA": 52, "ANY": 255}
RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}


def _encode_name(name):
    out = b""
    for label in name.rstrip(".").split("."):
        if label:
            b = label.encode("idna") if any(ord(c) > 127 for c in label) else label.encode("ascii")
            out += bytes([len(b)]) + b
    return out + b"\0"


def _decode_name(msg, pos):
    """(name, position after the name) of a possibly compressed name at `pos`."""
    labels, end, jumps = [], None, 0
    for _ in range(256):
        n = msg[pos]
        if n & 0xC0 == 0xC0:
            if end is None:
                end = pos + 2
            pos = ((n & 0x3F) << 8) | msg[pos + 1]
            jumps += 1
            if jumps > 64:
                raise ValueError("name compression loop")
            continue
        if n == 0:
            return (".".join(labels) + ".") if labels else ".", (end if end is not None else pos + 1)
        labels.append(msg[pos + 1:pos + 1 + n].decode("ascii", "replace"))
        pos += 1 + n
    raise ValueError("name too long")


class DNSAnswer:
    """A parsed DNS reply: rcode (name), flags and the answer section as (name, type, ttl, value)
    tuples. value: an address for A/AAAA, (preference, host) for MX, the target for CNAME, a list of
    byte strings for TXT, (usage, selector, mtype, data hex) for TLSA, raw bytes otherwise."""

    def __init__(self, msg):
        self.id, flags, qd, an, ns, ar = struct.unpack("!HHHHHH", msg[:12])
        self.flags = flags
        self.rcode = RCODES.get(flags & 0xF, str(flags & 0xF))
        self.authoritative = bool(flags & 0x0400)
        self.truncated = bool(flags & 0x0200)
        pos = 12
        for _ in range(qd):
            _, pos = _decode_name(msg, pos)
            pos += 4
        self.answers = []
        for _ in range(an):
            name, pos = _decode_name(msg, pos)
            rtype, _, ttl, rdlen = struct.unpack("!HHIH", msg[pos:pos + 10])
            pos += 10
            rdata = msg[pos:pos + rdlen]
            self.answers.append((name, _type_name(rtype), ttl, _rdata_value(msg, pos, rtype, rdata)))
            pos += rdlen

    def values(self, rtype):
        return [v for _, t, _, v in self.answers if t == rtype]

    def __repr__(self):
        return f"DNSAnswer({self.rcode}, {self.answers!r})"


def _type_name(num):
    return next((k for k, v in QTYPES.items() if v == num), num)


def _rdata_value(msg, pos, rtype, rdata):
    if rtype == 1:
        return socket.inet_ntop(socket.AF_INET, rdata)
    if rtype == 28:
        return socket.inet_ntop(socket.AF_INET6, rdata)
    if rtype == 15:
        return struct.unpack("!H", rdata[:2])[0], _decode_name(msg, pos + 2)[0]
    if rtype in (2, 5, 12):
        return _decode_name(msg, pos)[0]
    if rtype == 16:
        out, i = [], 0
        while i < len(rdata):
            out.append(rdata[i + 1:i + 1 + rdata[i]])
            i += 1 + rdata[i]
        return out
    if rtype == 52:
        return rdata[0], rdata[1], rdata[2], rdata[3:].hex()
    return bytes(rdata)


def dns_query(host, port, name, qtype="A", timeout=2.0, tcp=False):
    """One query (RD set) to host:port over UDP (or TCP); a DNSAnswer, or None on timeout."""
    qid = secrets.randbelow(65536)
    qnum = qtype if isinstance(qtype, int) else QTYPES[qtype]
    query = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + _encode_name(name) + struct.pack("!HH", qnum, 1)
    deadline = time.monotonic() + timeout
    if tcp:
        try:
            with socket.create_connection((host, port), timeout=timeout) as s:
                s.sendall(struct.pack("!H", len(query)) + query)
                buf = b""
                for _ in range(1000):
                    if len(buf) >= 2 and len(buf) >= 2 + struct.unpack("!H", buf[:2])[0]:
                        return DNSAnswer(buf[2:2 + struct.unpack("!H", buf[:2])[0]])
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return None
                    s.settimeout(remaining)
                    chunk = s.recv(65536)
                    if not chunk:
                        return None
                    buf += chunk
        except (socket.timeout, OSError):
            return None
        return None
    with socket.socket(_family(host), socket.SOCK_DGRAM) as s:
        try:
            s.connect((host, port))  # connected, so an ICMP port unreachable ends the wait at once
            s.send(query)
        except OSError:
            return None
        for _ in range(100):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            s.settimeout(remaining)
            try:
                msg = s.recv(65536)
            except socket.timeout:
                return None
            except OSError:  # ICMP port unreachable: nothing listens (yet)
                return None
            if len(msg) >= 12 and struct.unpack("!H", msg[:2])[0] == qid:
                return DNSAnswer(msg)
    return None


# MARK: dnsmasq

class _ServfailResponder:
    """A UDP server on 127.0.0.1 answering every query with SERVFAIL (dnsmasq forwards the SERVFAIL
    names to it and passes the SERVFAIL on)."""

    LIFETIME = 3600.0

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="servfail-responder", daemon=True)
        self.thread.start()

    def _run(self):
        deadline = time.monotonic() + self.LIFETIME
        for _ in range(10_000_000):
            if self.stopping.is_set() or time.monotonic() > deadline:
                return
            try:
                q, peer = self.sock.recvfrom(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                pos = 12
                for _ in range(128):
                    if q[pos] == 0:
                        break
                    pos += 1 + q[pos]
                pos += 5
                reply = q[:2] + bytes([0x80 | (q[2] & 0x79), 0x82]) + b"\0\1\0\0\0\0\0\0" + q[12:pos]
                self.sock.sendto(reply, peer)
            except (IndexError, OSError):
                continue

    def close(self):
        self.stopping.set()
        self.thread.join(timeout=2.0)
        self.sock.close()


class Dnsmasq(ManagedProcess):
    """A private dnsmasq for one test (or one test class) on 127.0.0.1 and a free UDP+TCP port.

    Only its own records are served: no /etc/hosts, no resolv.conf, no DHCP, no cache
    (`--cache-size=0`), TTL 0 unless `ttl` says otherwise. Every name under a zone of `zones`
    (default: `test`) that has no record is NXDOMAIN (`--local=/test/`); a name outside every zone
    with no record is REFUSED (nothing is ever forwarded off the machine).

    `records` is a list of tuples, one record or case each (names without or with the final dot):

        ("example.test", "MX", 10, "mx1.example.test")
        ("nullmx.test", "MX", 0, ".")                     # RFC 7505 Null MX
        ("mx1.example.test", "A", "127.0.0.2")            # a name may have several A and AAAA
        ("mx1.example.test", "AAAA", "::1")
        ("alias.example.test", "CNAME", "mx1.example.test")   # the target must be served here too
        ("_25._tcp.mx1.example.test", "TLSA", 3, 1, 1, "9f86d0...")   # usage, selector, type, hex
        ("example.test", "TXT", "v=spf1 -all")            # str or bytes; split into 255-octet strings
        ("odd.test", 99, "c0ffee")                        # any type number with hex RDATA
        ("gone.example", "NXDOMAIN")                      # the name and all below it
        ("slow.test", "TIMEOUT")                          # no answer ever (forwarded to a black hole)
        ("broken.test", "SERVFAIL")                       # SERVFAIL (from a forwarder that fails)
        ("shut.test", "REFUSED")                          # REFUSED (forwarded to no server)

    TIMEOUT, SERVFAIL and REFUSED cover the name and every name below it, except the records given
    here (an A record of mx.broken.test is still served, its MX query is SERVFAIL). A name with only
    TLSA, TXT or raw records is NXDOMAIN for the other types (dnsmasq's --dns-rr does not make the
    name exist); give it an A record when NODATA is wanted.

    Attributes: port, address ("127.0.0.1"), upstream ("127.0.0.1@PORT" for ub_ctx_set_fwd),
    records, zones. `reload(records)` restarts it on the same port with other records.
    """

    process_name = "dnsmasq"

    def __init__(self, test, records=(), port=None, zones=("test",), ttl=0, start=True):
        self.test = test
        self.binary = _sbin_tool("dnsmasq")
        self.root = _workdir(test, "relaygate-dnsmasq-")
        self.address = "127.0.0.1"
        self.fixed_port = port is not None
        self.port = port if port is not None else free_udp_tcp_port(self.address)
        self.zones = tuple(z.strip(".") for z in zones)
        self.ttl = int(ttl)
        self.records = list(records)
        self.proc = None
        self.runs = 0
        self.log_path = None
        self._blackhole = None
        self._servfail = None
        _add_cleanup(test, self._final_stop)
        if start:
            self.start()

    @property
    def upstream(self):
        return f"{self.address}@{self.port}"

    # Configuration

    def _helpers(self):
        kinds = {_kind(r) for r in self.records}
        if "TIMEOUT" in kinds and self._blackhole is None:
            # A bound UDP socket nobody reads: queries vanish without an ICMP error or an answer.
            self._blackhole = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self._blackhole.bind(("127.0.0.1", 0))
        if "SERVFAIL" in kinds and self._servfail is None:
            self._servfail = _ServfailResponder()

    def args(self):
        """dnsmasq's command line (without the binary)."""
        a = ["--keep-in-foreground", "--no-resolv", "--no-hosts", "--no-poll", "--conf-file=/dev/null",
             "--pid-file=", f"--port={self.port}", f"--listen-address={self.address}", "--bind-interfaces",
             "--cache-size=0", f"--local-ttl={self.ttl}", "--log-queries",
             f"--log-facility={self.log_path}"]
        a += [f"--local=/{z}/" for z in self.zones]
        for r in self.records:
            a += self._record_args(r)
        return a

    def _record_args(self, r):
        name, kind = _name(r[0]), _kind(r)
        if kind == "MX":
            _, _, pref, host = r
            return [f"--mx-host={name},{_name(host) if host.strip('.') else '.'},{int(pref)}"]
        if kind == "A":
            socket.inet_pton(socket.AF_INET, r[2])
            return [f"--host-record={name},{r[2]}"]
        if kind == "AAAA":
            socket.inet_pton(socket.AF_INET6, r[2])
            return [f"--host-record={name},{r[2]}"]
        if kind == "CNAME":
            return [f"--cname={name},{_name(r[2])}"]
        if kind == "TLSA":
            _, _, usage, selector, mtype, data = r
            bytes.fromhex(data)
            return [f"--dns-rr={name},52,{int(usage):02x}{int(selector):02x}{int(mtype):02x}{data}"]
        if kind == "TXT":
            text = r[2].encode("utf-8") if isinstance(r[2], str) else bytes(r[2])
            chunks = [text[i:i + 255] for i in range(0, len(text), 255)] or [b""]
            return [f"--dns-rr={name},16,{''.join(bytes([len(c)]).hex() + c.hex() for c in chunks)}"]
        if kind == "RR":
            bytes.fromhex(r[2])
            return [f"--dns-rr={name},{int(r[1])},{r[2]}"]
        if kind == "NXDOMAIN":
            return [f"--local=/{name}/"]
        if kind == "TIMEOUT":
            return [f"--server=/{name}/127.0.0.1#{self._blackhole.getsockname()[1]}"]
        if kind == "SERVFAIL":
            return [f"--server=/{name}/127.0.0.1#{self._servfail.port}"]
        if kind == "REFUSED":
            return [f"--server=/{name}/#"]
        raise ValueError(f"unknown record {r!r}")

    def unbound_conf(self, path=None, fast_timeouts=True, forward=True):
        """Writes a libunbound configuration (for ub_ctx_config) that resolves through this server:
        the `test.` local zone of RFC 6761 turned off, and with `forward`, the forward zone "."; with
        `fast_timeouts`, `outbound-msg-retry: 1` and `infra-host-ttl: 1` (a TIMEOUT name fails in
        0.1-3.5 s instead of 17 s, and does not take the forwarder down for the other names). Returns
        the path."""
        path = path or os.path.join(self.root, "unbound.conf")
        lines = ["server:", "    do-not-query-localhost: no"]
        lines += [f'    local-zone: "{z}." nodefault' for z in self.zones if z in ("test", "invalid", "onion",
                                                                               "home.arpa", "localhost")]
        if fast_timeouts:
            lines += ["    outbound-msg-retry: 1", "    infra-host-ttl: 1"]
        if forward:
            lines += ["forward-zone:", '    name: "."', f"    forward-addr: {self.upstream}"]
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        return path

    # Lifecycle

    def start(self):
        """Starts dnsmasq in the foreground and waits until it answers; with a port of the kernel's
        choice, a port taken in between is replaced by another (bounded)."""
        assert self.proc is None, "dnsmasq already running"
        if self.fixed_port and not port_free(self.address, self.port):
            raise AssertionError(f"port {self.port} of {self.address} is taken (UDP or TCP)")
        self._helpers()
        for attempt in range(5):
            self.runs += 1
            self.log_path = os.path.join(self.root, f"dnsmasq-{self.runs}.log")
            err_path = os.path.join(self.root, f"dnsmasq-{self.runs}.err")
            with open(err_path, "wb") as err:
                self.proc = subprocess.Popen([self.binary] + self.args(), stdin=subprocess.DEVNULL,
                                             stdout=err, stderr=err)
            if self._wait_ready():
                return self
            rc = self.proc.poll()
            self.stop()
            with open(err_path, "rb") as f:
                err_text = f.read().decode("utf-8", "replace")
            if not self.fixed_port and rc is not None and "in use" in err_text and attempt < 4:
                self.port = free_udp_tcp_port(self.address)
                continue
            raise AssertionError(f"dnsmasq did not start on {self.upstream} (exit status {rc}):\n{err_text}"
                                 f"{self.log_text()}")
        raise AssertionError("dnsmasq did not start")

    def _wait_ready(self):
        """True once an answer came from this process (its own log shows the probe: another server on
        the same port does not count)."""
        probe = self.zones[0] if self.zones else "test"
        deadline = time.monotonic() + START_TIMEOUT
        for _ in range(1000):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                return False
            if dns_query(self.address, self.port, probe, "SOA", timeout=0.2) is not None \
                    and f"query[SOA] {probe} from" in self.log_text() and self.proc.poll() is None:
                return True
            time.sleep(0.01)
        return False

    def reload(self, records):
        """Restarts on the same port with `records` instead."""
        self.stop()
        self.records = list(records)
        return self.start()

    def _final_stop(self):
        try:
            super()._final_stop()
        finally:
            if self._servfail is not None:
                self._servfail.close()
                self._servfail = None
            if self._blackhole is not None:
                self._blackhole.close()
                self._blackhole = None

    # Logs and checks

    def log_text(self):
        """The query log of the current run."""
        if not self.log_path or not os.path.exists(self.log_path):
            return ""
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    _QUERY = re.compile(r"query\[([A-Za-z0-9]+)\] (\S+) from ")

    def queries(self, qtype=None):
        """[(type, name)] of the queries received in the current run, in order (the readiness probes
        for the first zone's SOA left out)."""
        probe = self.zones[0] if self.zones else "test"
        out = []
        for m in self._QUERY.finditer(self.log_text()):
            t, n = m.group(1), m.group(2)
            if (t, n) == ("SOA", probe):
                continue
            if qtype is None or t == qtype:
                out.append((t, n))
        return out

    def query(self, name, qtype="A", timeout=2.0, tcp=False):
        """A DNSAnswer from this server (None on timeout)."""
        return dns_query(self.address, self.port, name, qtype, timeout=timeout, tcp=tcp)

    def dig(self, name, qtype="A", extra=("+tries=1", "+time=3")):
        """dig's output for one query to this server."""
        r = subprocess.run([require_tool("dig"), f"@{self.address}", "-p", str(self.port)] + list(extra)
                           + [name, str(qtype)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=TOOL_TIMEOUT)
        return r.stdout.decode("utf-8", "replace")


def _name(n):
    n = n.strip()
    return n[:-1] if n.endswith(".") and n != "." else n


def _kind(r):
    if len(r) < 2:
        raise ValueError(f"record needs a name and a type: {r!r}")
    if isinstance(r[1], int):
        return "RR"
    kind = str(r[1]).upper()
    arity = {"MX": 4, "A": 3, "AAAA": 3, "CNAME": 3, "TLSA": 6, "TXT": 3, "NXDOMAIN": 2, "TIMEOUT": 2,
             "SERVFAIL": 2, "REFUSED": 2}
    if kind not in arity:
        raise ValueError(f"unknown record type {r[1]!r} in {r!r}")
    if len(r) != arity[kind]:
        raise ValueError(f"{kind} takes {arity[kind]} fields: {r!r}")
    return kind


# MARK: SMTP sink in Python

@dataclasses.dataclass(frozen=True)
class Behaviour:
    """What a SinkServer does; a value, replaced as a whole (SinkServer.set_behaviour). A connection
    takes the behaviour current when it is accepted and keeps it to its end.

    Replies are one line (str) or several lines (a list of str, sent as given). The defaults accept
    everything. `rcpt_replies` maps addresses (compared without case) to their own reply. Stages for
    `silent_at` (read and never answer, until the client closes or the sink stops) and `close_at`
    (close the connection instead of answering): "greeting", "ehlo", "starttls", "mail", "rcpt",
    "data" (the DATA command), "dot" (the end of the message). `close_in_data=N` closes the
    connection once N octets of message content have arrived (0: right after the 354).
    With `strict` (the default) a MAIL or RCPT parameter of an extension not offered is refused with
    555 5.5.4, and a non-ASCII address without SMTPUTF8 with 553 5.6.7 (RFC 5321 4.1.1.11, RFC 6531).
    """

    greeting: object = "220 {hostname} ESMTP sink"
    ehlo_reply: object = None          # None: the 250 list; e.g. "502 5.5.1 no EHLO" for HELO fallback
    pipelining: bool = True
    size: object = None                # None: no SIZE; an int: SIZE N, enforced at MAIL and after DATA
    eightbitmime: bool = True
    smtputf8: bool = False
    dsn: bool = False
    enhancedstatuscodes: bool = True
    starttls: bool = False             # offered only when the sink has a certificate (tls=)
    starttls_reply: object = None      # e.g. "454 4.7.0 TLS not available": refused, stays plain
    mail_reply: object = None
    rcpt_reply: object = None
    rcpt_replies: dict = dataclasses.field(default_factory=dict)
    data_reply: object = None          # reply to the DATA command instead of 354
    final_reply: object = None         # reply after the dot; default "250 2.0.0 Ok: queued as {qid}"
    quit_reply: object = "221 2.0.0 Bye"
    silent_at: object = None
    close_at: object = None
    close_in_data: object = None
    strict: bool = True
    max_message: int = 64 * 1024 * 1024

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


@dataclasses.dataclass
class Rcpt:
    address: str
    params: dict
    reply: str

    @property
    def accepted(self):
        return self.reply[:1] == "2"


@dataclasses.dataclass
class Transaction:
    """One mail transaction (from MAIL to the reply after the dot, RSET, or the end of the
    connection). data: the message after dot-unstuffing, ending with CRLF; None when DATA was not
    reached. reply: the reply after the dot (or to DATA when that was refused)."""

    connection: int
    ehlo: object
    tls: bool
    mail_from: str
    mail_params: dict
    mail_reply: str
    rcpts: list = dataclasses.field(default_factory=list)
    data: object = None
    reply: object = None
    completed: bool = False
    qid: object = None

    @property
    def recipients(self):
        """The addresses that got a 2xx at RCPT."""
        return [r.address for r in self.rcpts if r.accepted]

    @property
    def accepted(self):
        return self.completed and self.reply is not None and self.reply[:1] == "2"


@dataclasses.dataclass
class Connection:
    """One connection. commands: [(command line, reply, pipelined)], pipelined meaning the command
    had arrived before the reply to the one before it was sent."""

    index: int
    peer: tuple
    local: tuple
    started: float
    ended: object = None
    helo_verb: object = None
    ehlo: object = None
    tls: bool = False
    tls_version: object = None
    tls_cipher: object = None
    commands: list = dataclasses.field(default_factory=list)
    transactions: list = dataclasses.field(default_factory=list)
    bare_lf: bool = False
    injected: bytes = b""
    closed_by: object = None           # "client", "server" (a behaviour or an error), "stop"
    error: object = None

    @property
    def pipelined(self):
        return any(p for _, _, p in self.commands)

    @property
    def verbs(self):
        return [c.split(" ", 1)[0].split(":", 1)[0].upper() for c, _, _ in self.commands]


class _Closed(Exception):
    def __init__(self, by, error=None):
        super().__init__(by)
        self.by = by
        self.error = error


class SinkServer:
    """A downstream SMTP server in Python threads, for one test (or one test class).

    host: a 127.0.0.x address or ::1; port 0 picks a free port, or a fixed one (25 works as root).
    behaviour: a Behaviour (or a dict of its fields); tls: (certificate, key) paths for STARTTLS
    (e.g. server.pem and server.key from certs/make-certs). hostname: the name it greets with.

    Attributes: host, port, hostname, behaviour. transactions: the completed ones (the message was
    received and answered after the dot, with whatever reply); attempts: every transaction, also those
    ended by RSET, QUIT or a close before the dot; connections: every connection. wait_for(count)
    waits for transactions; wait_for_connections(count) for connections. refuse_connections() closes
    the listening socket (connections are refused), accept_connections() opens it again on the same
    port. stop() ends everything within a few seconds; it is also a cleanup.
    """

    MAX_LINE = 4096
    MAX_COMMANDS = 10000
    SESSION_LIMIT = 300.0
    IDLE_LIMIT = 120.0
    POLL = 0.2

    def __init__(self, test, host="127.0.0.1", port=0, behaviour=None, tls=None, hostname="sink.test",
                 start=True):
        self.test = test
        self.host = host
        self.port = port
        self.hostname = hostname
        if behaviour is None:
            behaviour = Behaviour()
        elif isinstance(behaviour, dict):
            behaviour = Behaviour(**behaviour)
        self._behaviour = behaviour
        self.tls_context = None
        if tls is not None:
            cert, key = tls
            self.tls_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.tls_context.load_cert_chain(cert, key)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._connections = []
        self._attempts = []
        self._transactions = []
        self._open_socks = set()
        self._threads = []
        self._qid = 0
        self.errors = []
        self._stopping = threading.Event()
        self._listener = None
        self._accept_thread = None
        _add_cleanup(test, self._final_stop)
        if start:
            self.start()

    # Behaviour

    @property
    def behaviour(self):
        with self._lock:
            return self._behaviour

    @behaviour.setter
    def behaviour(self, value):
        if isinstance(value, dict):
            value = Behaviour(**value)
        with self._lock:
            self._behaviour = value

    def set_behaviour(self, **changes):
        """Changes some fields; connections accepted afterwards see them. Returns the new behaviour."""
        with self._lock:
            self._behaviour = self._behaviour.replace(**changes)
            return self._behaviour

    # Lifecycle

    def start(self):
        assert self._accept_thread is None, "sink already running"
        self._stopping.clear()
        self._listen()
        self._accept_thread = threading.Thread(target=self._accept_loop, name=f"sink-{self.port}", daemon=True)
        self._accept_thread.start()
        return self

    def _listen(self):
        s = socket.socket(_family(self.host), socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((self.host, self.port))
        except OSError as e:
            s.close()
            raise AssertionError(f"sink cannot listen on {self.host}:{self.port}: {e}") from None
        s.listen(64)
        s.settimeout(self.POLL)
        self.port = s.getsockname()[1]
        with self._lock:
            self._listener = s

    def refuse_connections(self):
        """Closes the listening socket: connections to host:port are refused until accept_connections()."""
        with self._lock:
            s, self._listener = self._listener, None
        if s is None:
            return
        # shutdown() takes a Linux listening socket out of LISTEN at once, even while the accept thread
        # still holds it; close() alone waits for that thread's poll to end.
        _shutdown(s)
        s.close()
        deadline = time.monotonic() + 2.0
        for _ in range(200):
            if not listening(self.host, self.port) or time.monotonic() > deadline:
                return
            time.sleep(0.01)

    def accept_connections(self):
        with self._lock:
            if self._listener is not None:
                return
        self._listen()

    def stop(self, timeout=5.0):
        """Stops listening, closes every connection, and waits (bounded) for the threads."""
        self._stopping.set()
        self.refuse_connections()
        with self._lock:
            socks = list(self._open_socks)
            threads = list(self._threads)
            accept_thread, self._accept_thread = self._accept_thread, None
        for s in socks:
            _shutdown(s)
        deadline = time.monotonic() + timeout
        for t in ([accept_thread] if accept_thread else []) + threads:
            t.join(max(0.0, deadline - time.monotonic()))

    def _final_stop(self):
        self.stop()
        if self.errors:
            raise AssertionError("sink server failed:\n" + "\n".join(self.errors))

    # Records

    @property
    def connections(self):
        with self._lock:
            return list(self._connections)

    @property
    def transactions(self):
        with self._lock:
            return list(self._transactions)

    @property
    def attempts(self):
        with self._lock:
            return list(self._attempts)

    @property
    def messages(self):
        """The completed transactions answered with a 2xx after the dot."""
        return [t for t in self.transactions if t.accepted]

    def wait_for(self, count, timeout=10.0, what="transactions"):
        """Waits until `count` transactions (or connections, or attempts) are recorded; returns the list."""
        deadline = time.monotonic() + timeout
        with self._changed:
            for _ in range(100000):
                items = {"transactions": self._transactions, "connections": self._connections,
                         "attempts": self._attempts}[what]
                if len(items) >= count:
                    return list(items)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._changed.wait(min(remaining, 0.5))
            items = {"transactions": self._transactions, "connections": self._connections,
                     "attempts": self._attempts}[what]
            summary = "; ".join(f"#{c.index} {c.verbs} closed_by={c.closed_by} error={c.error}"
                                for c in self._connections)
            raise AssertionError(f"sink {self.host}:{self.port}: {len(items)} {what} within {timeout}s, "
                                 f"wanted {count}; connections: {summary[:4000] or 'none'}")

    def wait_for_connections(self, count, timeout=10.0):
        return self.wait_for(count, timeout, what="connections")

    def _record(self, kind, item):
        with self._changed:
            {"connection": self._connections, "attempt": self._attempts, "transaction": self._transactions}[kind] \
                .append(item)
            self._changed.notify_all()

    # Accepting

    def _accept_loop(self):
        for _ in range(1000000):
            if self._stopping.is_set():
                return
            with self._lock:
                listener = self._listener
            if listener is None:
                time.sleep(self.POLL)
                continue
            try:
                sock, peer = listener.accept()
            except socket.timeout:
                continue
            except OSError:
                if self._stopping.is_set():
                    return
                time.sleep(0.01)  # closed by refuse_connections
                continue
            with self._lock:
                behaviour = self._behaviour
                index = len(self._connections)
                self._open_socks.add(sock)
            conn = Connection(index=index, peer=peer[:2], local=sock.getsockname()[:2], started=time.monotonic())
            self._record("connection", conn)
            t = threading.Thread(target=self._serve, args=(sock, conn, behaviour), name=f"sink-conn-{index}",
                                 daemon=True)
            with self._lock:
                self._threads.append(t)
            t.start()

    def _serve(self, sock, conn, behaviour):
        session = _Session(self, sock, conn, behaviour)
        try:
            session.run()
        except _Closed as c:
            conn.closed_by = c.by
            conn.error = c.error
        except Exception as e:  # a fault in the sink itself
            conn.closed_by = "server"
            conn.error = repr(e)
            with self._lock:
                self.errors.append(f"connection {conn.index}: {traceback.format_exc()}")
        finally:
            session.finish()
            conn.ended = time.monotonic()
            with self._lock:
                self._open_socks.discard(session.sock)
                self._open_socks.discard(sock)
            _close(session.sock)
            _close(sock)
            with self._changed:
                self._changed.notify_all()

    def _next_qid(self):
        with self._lock:
            self._qid += 1
            return f"SINK{self._qid:06d}"


def _shutdown(s):
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _close(s):
    try:
        s.close()
    except OSError:
        pass


_MAIL = re.compile(rb"^MAIL FROM: ?<([^<>]*)>((?: +[^ ]+)*) *$", re.I)
_RCPT = re.compile(rb"^RCPT TO: ?<([^<>]*)>((?: +[^ ]+)*) *$", re.I)


def _params(text):
    out = {}
    for p in text.split():
        k, eq, v = p.partition(b"=")
        out[k.decode("ascii", "replace").upper()] = v.decode("utf-8", "surrogateescape") if eq else None
    return out


class _Session:
    """One connection's SMTP dialogue (server side)."""

    def __init__(self, sink, sock, conn, behaviour):
        self.sink = sink
        self.sock = sock
        self.conn = conn
        self.b = behaviour
        self.buf = b""
        self.txn = None
        self.started = time.monotonic()
        self.last_input = self.started
        sock.settimeout(sink.POLL)

    # I/O

    def _recv(self):
        """More input into self.buf; raises _Closed at EOF, stop or the time limits."""
        for _ in range(100000):
            now = time.monotonic()
            if self.sink._stopping.is_set():
                raise _Closed("stop")
            if now - self.started > self.sink.SESSION_LIMIT or now - self.last_input > self.sink.IDLE_LIMIT:
                raise _Closed("server", "time limit")
            try:
                chunk = self.sock.recv(65536)
            except (socket.timeout, ssl.SSLWantReadError):
                continue
            except (ConnectionError, OSError, ssl.SSLError) as e:
                if self.sink._stopping.is_set():
                    raise _Closed("stop")
                raise _Closed("client", repr(e))
            if not chunk:
                raise _Closed("stop" if self.sink._stopping.is_set() else "client")
            self.last_input = time.monotonic()
            self.buf += chunk
            return
        raise _Closed("server", "receive loop bound")

    def _line(self):
        """The next command line without its line end (CRLF, or a bare LF, which is noted)."""
        for _ in range(100000):
            i = self.buf.find(b"\n")
            if i >= 0:
                line, self.buf = self.buf[:i], self.buf[i + 1:]
                if line.endswith(b"\r"):
                    line = line[:-1]
                else:
                    self.conn.bare_lf = True
                if len(line) > self.sink.MAX_LINE:
                    self._send("500 5.5.2 Line too long")
                    raise _Closed("server", "line too long")
                return line
            if len(self.buf) > self.sink.MAX_LINE:
                self._send("500 5.5.2 Line too long")
                raise _Closed("server", "line too long")
            self._recv()
        raise _Closed("server", "line loop bound")

    def _text(self, reply):
        """A reply (str or list of lines) as recorded: its lines joined by LF, {hostname} filled in."""
        lines = [reply] if isinstance(reply, str) else list(reply)
        return "\n".join(l.replace("{hostname}", self.sink.hostname) for l in lines)

    def _send(self, text):
        try:
            self.sock.sendall(text.replace("\n", "\r\n").encode("utf-8") + b"\r\n")
        except (OSError, ssl.SSLError) as e:
            raise _Closed("client", repr(e))
        return text

    def _answer(self, command, reply, before_send=None):
        """Records the command and its reply (and runs `before_send(text)`) before the client can see
        the reply; returns the reply's text."""
        text = self._text(reply)
        self.conn.commands.append((command, text, bool(self.buf)))
        if before_send is not None:
            before_send(text)
        return self._send(text)

    def _stage(self, stage, command=None):
        """Applies silent_at / close_at for `stage`; True when the stage goes on normally."""
        if self.b.close_at == stage:
            if command is not None:
                self.conn.commands.append((command, None, bool(self.buf)))
            raise _Closed("server", f"close_at {stage}")
        if self.b.silent_at == stage:
            if command is not None:
                self.conn.commands.append((command, None, bool(self.buf)))
            self._silence()
        return True

    def _silence(self):
        for _ in range(1000000):
            self.buf = b""
            self._recv()
        raise _Closed("server", "silence loop bound")

    # Dialogue

    def run(self):
        self._stage("greeting")
        greeting = self._text(self.b.greeting)
        self._send(greeting)
        code = greeting.split("\n")[-1][:3]
        if code == "421":
            raise _Closed("server", "greeting 421")
        refused = code[:1] != "2"
        for _ in range(self.sink.MAX_COMMANDS):
            raw = self._line()
            command = raw.decode("utf-8", "surrogateescape")
            verb = raw.split(b" ", 1)[0].split(b":", 1)[0].upper()
            if refused and verb != b"QUIT":
                self._answer(command, "503 5.5.1 No service")
                continue
            handler = {b"EHLO": self._ehlo, b"HELO": self._ehlo, b"STARTTLS": self._starttls, b"MAIL": self._mail,
                       b"RCPT": self._rcpt, b"DATA": self._data, b"RSET": self._rset, b"NOOP": self._noop,
                       b"QUIT": self._quit, b"VRFY": self._vrfy}.get(verb)
            if handler is None:
                self._answer(command, "500 5.5.2 Command not recognized")
                continue
            handler(raw, command)
        raise _Closed("server", "command limit")

    def _ehlo_lines(self):
        b, out = self.b, [self.sink.hostname]
        if b.pipelining:
            out.append("PIPELINING")
        if b.size is not None:
            out.append(f"SIZE {int(b.size)}" if b.size else "SIZE")
        if b.eightbitmime:
            out.append("8BITMIME")
        if b.smtputf8:
            out.append("SMTPUTF8")
        if b.dsn:
            out.append("DSN")
        if b.enhancedstatuscodes:
            out.append("ENHANCEDSTATUSCODES")
        if self._tls_offered():
            out.append("STARTTLS")
        return [f"250-{l}" for l in out[:-1]] + [f"250 {out[-1]}"]

    def _tls_offered(self):
        return self.b.starttls and self.sink.tls_context is not None and not self.conn.tls

    def _ehlo(self, raw, command):
        self._stage("ehlo", command)
        verb, _, name = command.partition(" ")
        verb = verb.upper()
        if verb == "EHLO" and self.b.ehlo_reply is not None:
            self._answer(command, self.b.ehlo_reply)
            return
        self._end_transaction()
        self.conn.helo_verb, self.conn.ehlo = verb, name.strip()
        if verb == "EHLO":
            self._answer(command, self._ehlo_lines())
        else:
            self._answer(command, f"250 {self.sink.hostname}")

    def _starttls(self, raw, command):
        if raw.upper() != b"STARTTLS":
            self._answer(command, "501 5.5.4 Syntax: STARTTLS")
            return
        if not self._tls_offered():
            self._answer(command, "502 5.5.1 STARTTLS not offered")
            return
        self._stage("starttls", command)
        if self.b.starttls_reply is not None:
            self._answer(command, self.b.starttls_reply)
            return
        # Whatever came after STARTTLS in the clear is thrown away (CVE-2011-0411) and noted.
        self.conn.injected += self.buf
        self.buf = b""
        self._answer(command, "220 2.0.0 Ready to start TLS")
        try:
            tls_sock = self.sink.tls_context.wrap_socket(self.sock, server_side=True, do_handshake_on_connect=False)
        except (OSError, ssl.SSLError) as e:
            raise _Closed("server", f"TLS setup: {e!r}")
        with self.sink._lock:
            self.sink._open_socks.add(tls_sock)
        self.sock = tls_sock
        tls_sock.settimeout(IO_TIMEOUT)
        try:
            tls_sock.do_handshake()
        except (OSError, ssl.SSLError) as e:
            raise _Closed("client", f"TLS handshake: {e!r}")
        tls_sock.settimeout(self.sink.POLL)
        self.conn.tls = True
        self.conn.tls_version = tls_sock.version()
        self.conn.tls_cipher = (tls_sock.cipher() or (None,))[0]
        self.conn.helo_verb = self.conn.ehlo = None
        self._end_transaction()

    def _check_params(self, params, allowed):
        for k in params:
            if k not in allowed:
                return f"555 5.5.4 Unsupported parameter {k}"
        return None

    def _mail(self, raw, command):
        if self.conn.ehlo is None:
            self._answer(command, "503 5.5.1 Send EHLO first")
            return
        if self.txn is not None:
            self._answer(command, "503 5.5.1 Nested MAIL command")
            return
        m = _MAIL.match(raw)
        if not m:
            self._answer(command, "501 5.5.4 Syntax: MAIL FROM:<address>")
            return
        self._stage("mail", command)
        address = m.group(1).decode("utf-8", "surrogateescape")
        params = _params(m.group(2))
        b = self.b
        reply = None
        if b.strict:
            allowed = set()
            if b.size is not None:
                allowed.add("SIZE")
            if b.eightbitmime:
                allowed.add("BODY")
            if b.smtputf8:
                allowed.add("SMTPUTF8")
            if b.dsn:
                allowed |= {"RET", "ENVID"}
            reply = self._check_params(params, allowed)
            if reply is None and "BODY" in params and (params["BODY"] or "").upper() not in ("7BIT", "8BITMIME"):
                reply = "501 5.5.4 Bad BODY value"
            if reply is None and not _ascii(m.group(1)) and "SMTPUTF8" not in params:
                reply = "553 5.6.7 Non-ASCII address without SMTPUTF8"
        if reply is None and b.size and (params.get("SIZE") or "").isdigit() and int(params["SIZE"]) > int(b.size):
            reply = "552 5.3.4 Message too big"
        if reply is None and b.mail_reply is not None:
            reply = b.mail_reply
        if reply is None:
            reply = "250 2.1.0 Ok"
        def begin(text):
            if text[:1] == "2":
                self.txn = Transaction(connection=self.conn.index, ehlo=self.conn.ehlo, tls=self.conn.tls,
                                       mail_from=address, mail_params=params, mail_reply=text)
                self.conn.transactions.append(self.txn)
                self.sink._record("attempt", self.txn)

        self._answer(command, reply, begin)

    def _rcpt(self, raw, command):
        if self.txn is None:
            self._answer(command, "503 5.5.1 Need MAIL command")
            return
        m = _RCPT.match(raw)
        if not m:
            self._answer(command, "501 5.5.4 Syntax: RCPT TO:<address>")
            return
        self._stage("rcpt", command)
        address = m.group(1).decode("utf-8", "surrogateescape")
        params = _params(m.group(2))
        b = self.b
        reply = None
        if b.strict:
            reply = self._check_params(params, {"NOTIFY", "ORCPT"} if b.dsn else set())
            if reply is None and not _ascii(m.group(1)) and "SMTPUTF8" not in self.txn.mail_params:
                reply = "553 5.6.7 Non-ASCII address without SMTPUTF8"
        if reply is None:
            for k, v in b.rcpt_replies.items():
                if k.lower() == address.lower():
                    reply = v
                    break
        if reply is None and b.rcpt_reply is not None:
            reply = b.rcpt_reply
        if reply is None:
            reply = "250 2.1.5 Ok"
        self._answer(command, reply, lambda text: self.txn.rcpts.append(Rcpt(address=address, params=params,
                                                                             reply=text)))

    def _data(self, raw, command):
        if raw.upper() != b"DATA":
            self._answer(command, "501 5.5.4 Syntax: DATA")
            return
        if self.txn is None:
            self._answer(command, "503 5.5.1 Need MAIL command")
            return
        if not self.txn.recipients:
            self._answer(command, "554 5.5.1 No valid recipients")
            return
        self._stage("data", command)
        if self.b.data_reply is not None:
            def refused(text):
                if text[:1] != "3":
                    self.txn.reply = text

            text = self._answer(command, self.b.data_reply, refused)
            if text[:1] != "3":
                self._end_transaction()
                return
        else:
            self._answer(command, "354 End data with <CR><LF>.<CR><LF>")
        self.txn.data = b""
        data = self._read_message()
        self.txn.data = data
        self._stage("dot", ".")
        b = self.b
        if len(data) > b.max_message or (b.size and len(data) > int(b.size)):
            reply = "552 5.3.4 Message too big"
        elif b.final_reply is not None:
            reply = b.final_reply
        else:
            reply = "250 2.0.0 Ok: queued as {qid}"
        qid = self.sink._next_qid()
        reply = [l.replace("{qid}", qid) for l in ([reply] if isinstance(reply, str) else reply)]
        txn = self.txn

        def complete(text):
            txn.reply, txn.qid, txn.completed = text, qid, True
            self.sink._record("transaction", txn)

        self.txn = None
        self._answer(".", reply, complete)

    def _read_message(self):
        """The message up to the line ".", dot-unstuffed (RFC 5321 4.5.2), ending with CRLF. Only
        CRLF ends a line; a bare CR or LF stays in the data as received."""
        out = []
        size = 0
        limit = self.b.max_message
        close_after = self.b.close_in_data
        if close_after is not None and close_after <= 0:
            raise _Closed("server", "close_in_data")
        for _ in range(10_000_000):
            i = self.buf.find(b"\r\n")
            if i < 0:
                if close_after is not None and size + len(self.buf) >= close_after:
                    raise _Closed("server", "close_in_data")
                self._recv()
                continue
            line, self.buf = self.buf[:i], self.buf[i + 2:]
            if line == b".":
                return b"".join(out)
            if line.startswith(b"."):
                line = line[1:]
            size += len(line) + 2
            if size <= limit:
                out.append(line + b"\r\n")
            if close_after is not None and size >= close_after:
                raise _Closed("server", "close_in_data")
        raise _Closed("server", "data loop bound")

    def _rset(self, raw, command):
        self._end_transaction()
        self._answer(command, "250 2.0.0 Ok")

    def _noop(self, raw, command):
        self._answer(command, "250 2.0.0 Ok")

    def _vrfy(self, raw, command):
        self._answer(command, "252 2.5.2 Cannot VRFY")

    def _quit(self, raw, command):
        self._end_transaction()
        self._answer(command, self.b.quit_reply)
        raise _Closed("client")

    def _end_transaction(self):
        self.txn = None

    def finish(self):
        self.txn = None


def _ascii(b):
    return all(c < 128 for c in b)


# MARK: Postfix smtp-sink

class PostfixSink(ManagedProcess):
    """Postfix's smtp-sink in the foreground on host:port (port 0: a free one), for one test or class.

    It runs with -c (running counters on stdout: sess, quit, mesg) and -d (each message dumped to a
    file with X-Helo-Args, X-Mail-Args and one X-Rcpt-Args line per recipient). `args` adds options:
    e.g. ("-r", "RCPT") 4xx for every RCPT, ("-f", "DATA") 5xx at DATA, ("-q", ".") close instead of
    answering the dot, ("-p",) no PIPELINING, ("-8",) no 8BITMIME, ("-N",) no DSN.

    Attributes: host, port, address ("host:port"). For the current run (restart() starts another):
    counters() -> {"sess", "quit", "mesg"}; messages (the mesg counter); recipients (the number of
    X-Rcpt-Args lines of its dumps); dumps() -> parsed files (body with LF line ends, as smtp-sink
    writes them); wait_for(count, timeout) waits for `count` messages and their dumps.
    """

    process_name = "smtp-sink"

    def __init__(self, test, host="127.0.0.1", port=0, args=(), hostname="smtp-sink.test", start=True):
        self.test = test
        self.binary = _sbin_tool("smtp-sink")
        self.root = _workdir(test, "relaygate-smtp-sink-")
        self.host = host
        self.port = port or _free_tcp_port(host)
        self.hostname = hostname
        self.extra_args = list(args)
        self.dump_dir = os.path.join(self.root, "dump")
        os.makedirs(self.dump_dir)
        self.proc = None
        self.runs = 0
        self.out_path = None
        self.err_path = None
        _add_cleanup(test, self._final_stop)
        if start:
            self.start()

    @property
    def address(self):
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def start(self):
        assert self.proc is None, "smtp-sink already running"
        self.runs += 1
        self.out_path = os.path.join(self.root, f"counters-{self.runs}.txt")
        self.err_path = os.path.join(self.root, f"smtp-sink-{self.runs}.err")
        args = [self.binary, "-c", "-h", self.hostname]
        if os.getuid() == 0:
            # As root -u is required; staying root keeps the dumps writable in the private folder.
            args += ["-u", pwd.getpwuid(0).pw_name]
        args += ["-d", os.path.join(self.dump_dir, f"{self.runs}-%Y%m%d%H%M%S.")]
        args += self.extra_args + [self.address, "64"]
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        deadline = time.monotonic() + START_TIMEOUT
        for _ in range(1000):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                break
            if listening(self.host, self.port):
                return self
            time.sleep(0.01)
        rc = self.proc.poll()
        self.stop()
        raise AssertionError(f"smtp-sink did not start on {self.address} (exit status {rc}): {self._err()}")

    def death_report(self):
        return self._err()

    def _err(self):
        if not self.err_path or not os.path.exists(self.err_path):
            return ""
        with open(self.err_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    _COUNTERS = re.compile(r"sess=(\d+) quit=(\d+) mesg=(\d+)")

    def counters(self):
        """The last running counters of the current run (zeros before the first update)."""
        text = ""
        if self.out_path and os.path.exists(self.out_path):
            with open(self.out_path, "rb") as f:
                text = f.read().decode("ascii", "replace")
        found = self._COUNTERS.findall(text)
        sess, quit_, mesg = (int(x) for x in found[-1]) if found else (0, 0, 0)
        return {"sess": sess, "quit": quit_, "mesg": mesg}

    @property
    def messages(self):
        return self.counters()["mesg"]

    def dumps(self):
        """Each message dumped in the current run as a dict: file, helo, mail, rcpts (the raw
        arguments), body (bytes)."""
        out = []
        for name in sorted(n for n in os.listdir(self.dump_dir) if n.startswith(f"{self.runs}-")):
            with open(os.path.join(self.dump_dir, name), "rb") as f:
                data = f.read()
            d = {"file": name, "helo": None, "mail": None, "rcpts": [], "body": b""}
            lines = data.split(b"\n")
            i = 0
            for i, line in enumerate(lines):
                if line.startswith(b"X-Helo-Args: "):
                    d["helo"] = line[13:].decode("utf-8", "replace")
                elif line.startswith(b"X-Mail-Args: "):
                    d["mail"] = line[13:].decode("utf-8", "replace")
                elif line.startswith(b"X-Rcpt-Args: "):
                    d["rcpts"].append(line[13:].decode("utf-8", "replace"))
                elif line.startswith(b"Received: "):
                    break
            # The Received header smtp-sink adds has three lines; the message follows, then an empty line.
            body = b"\n".join(lines[i + 3:])
            d["body"] = body[:-1] if body.endswith(b"\n\n") else body
            out.append(d)
        return out

    @property
    def recipients(self):
        return sum(len(d["rcpts"]) for d in self.dumps())

    def wait_for(self, count, timeout=10.0):
        """Waits until `count` messages are counted and dumped; returns the dumps."""
        deadline = time.monotonic() + timeout
        for _ in range(int(timeout / 0.02) + 2):
            if self.messages >= count and len(self.dumps()) >= count:
                return self.dumps()
            if time.monotonic() > deadline:
                break
            time.sleep(0.02)
        raise AssertionError(f"smtp-sink {self.address}: {self.counters()} within {timeout}s, wanted {count} "
                             f"messages; {len(self.dumps())} dumps")


def _free_tcp_port(host):
    with socket.socket(_family(host), socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]
