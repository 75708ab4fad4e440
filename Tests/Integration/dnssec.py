"""A DNSSEC-signed zone for the DANE tests (RFC 7672): a private authoritative nsd serving one zone
signed with ldns-signzone, and the trust anchor that makes libunbound call its answers secure.

- `SignedZone`: nsd on 127.0.0.1 and a free UDP+TCP port serving one zone (default `dane.test`)
  with SOA, NS, the given MX, A, AAAA, CNAME, TLSA and TXT records (the record tuples of
  downstream.Dnsmasq), NSEC and RRSIGs; `trust_anchor_file` holds the DS of its key signing key.
  `tamper=` serves a copy whose records were changed after signing (validation: bogus), and
  `validity=` signs with other signature times (expired, not yet valid).
- `tlsa_for(cert)`: the TLSA data of a certificate (DANE-EE SPKI SHA-256 by default; DANE-TA: the
  SHA-256 of the CA's full certificate).

Like downstream.py: processes are stopped by PID (SIGTERM, wait, SIGKILL), every wait and loop is
bounded in count and time, temporary folders go away with the test (or the class), and a missing
tool is a failure. Traffic stays on 127.0.0.1.

libunbound and the signed zone (measured with libunbound 1.17, nsd 4.6 and ldns 1.8):
- The resolver's own configuration is enough: `do-not-query-localhost: no`, `local-zone: "test."
  nodefault`, `local-zone: "invalid." nodefault`, `outbound-msg-retry: 1`, `infra-host-ttl: 1`,
  `trust-anchor-file:` this zone's DS, then ub_ctx_set_fwd("127.0.0.1@PORT") to nsd. MX, A, AAAA
  and TLSA answers come back secure=1, NXDOMAIN and NODATA too (NSEC); no `domain-insecure`,
  `val-permissive-mode`, `stub-zone` or `harden-*` setting is needed. A trust anchor at the zone
  itself means the `test.` parent is never asked for a DS. A `forward-zone` for "." in the file, or
  a `stub-zone` for the zone, works the same as ub_ctx_set_fwd; so does ub_ctx_add_ta_file.
- `trust-anchor-file:` takes DS lines without a TTL (`dane.test.<TAB>IN<TAB>DS<TAB>...`, as
  ldns-keygen writes them) or the key signing key's DNSKEY line (its `;{id = ...}` comment is fine).
  The zone signing key's DNSKEY as the anchor is bogus ("signature missing ... for trust anchor"):
  ldns-signzone signs the DNSKEY set with the key signing key only.
- Without `local-zone: "test." nodefault` every name is NXDOMAIN (not secure, not bogus), from
  libunbound itself; without a trust anchor the answers are secure=0, bogus=0.
- A record changed after signing: that query is bogus=1 with havedata=1 and the (wrong) data still
  in `data`, why_bogus "validation failure <NAME TYPE IN>: ECDSA signature verification failed from
  127.0.0.1"; the other records of the zone stay secure, in the same context too. A DS of another
  key: every answer is bogus ("no keys have a DS with algorithm ECDSAP256SHA256").
- ldns-signzone signs from exactly now to now + 4 weeks unless told: SignedZone gives the times
  itself (`validity`, seconds from now; one hour back by default). Expired signatures are bogus
  ("signature expired"), future ones too ("signature before inception date").
- Names outside the zone are REFUSED by nsd, which libunbound turns into SERVFAIL (rcode 2); the
  zone's names keep working in the same context afterwards.
"""

import hashlib
import ipaddress
import os
import signal
import struct
import subprocess
import time

from downstream import (START_TIMEOUT, STOP_TIMEOUT, TOOL_TIMEOUT, _add_cleanup, _kind, _name, _sbin_tool,
                        _stop_process, _workdir, dns_query, free_udp_tcp_port, port_free)
from harness import ManagedProcess, require_tool

ALGORITHM = "ECDSAP256SHA256"


# MARK: Helpers

def _run(args, what, cwd=None, input_bytes=None):
    r = subprocess.run(args, cwd=cwd, input=input_bytes, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=TOOL_TIMEOUT)
    if r.returncode != 0:
        raise AssertionError(f"{what} failed ({r.returncode}): {r.stderr.decode('utf-8', 'replace')}")
    return r.stdout


def _children(pid):
    """PIDs of the processes whose parent is `pid` (from /proc)."""
    out = []
    try:
        names = os.listdir("/proc")
    except OSError:
        return out
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read().decode("ascii", "replace")
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 1 and fields[1] == str(pid):
            out.append(int(name))
    return out


def _descendants(pid, limit=64):
    out, todo = [], [pid]
    for _ in range(limit):
        if not todo:
            break
        kids = _children(todo.pop())
        out += kids
        todo += kids
    return out


def _alive(pid):
    """True while `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode("ascii", "replace")
    except OSError:
        return False
    return stat[stat.rfind(")") + 2:][:1] != "Z"


def _txt_strings(value):
    text = value.encode("utf-8") if isinstance(value, str) else bytes(value)
    chunks = [text[i:i + 255] for i in range(0, len(text), 255)] or [b""]
    out = []
    for c in chunks:
        s = "".join(chr(b) if 0x20 <= b < 0x7F and b not in (0x22, 0x5C) else f"\\{b:03d}" for b in c)
        out.append(f'"{s}"')
    return " ".join(out)


# MARK: TLSA data

def tlsa_for(cert_pem_path, usage=3, selector=None, mtype=1):
    """The hex data of a TLSA record for the (first) certificate in `cert_pem_path`.

    selector 1: the SubjectPublicKeyInfo (`openssl x509 -pubkey -noout | openssl pkey -pubin
    -outform der`); selector 0: the whole certificate (DER). mtype 1: SHA-256, 2: SHA-512, 0: the
    data itself. Without `selector`: 0 for usage 2 (DANE-TA, give the CA's certificate) and 0 (PKIX-TA),
    1 for usage 3 (DANE-EE, give the server's certificate) and 1 (PKIX-EE). `usage` chooses only that
    default: the data does not depend on it."""
    if int(usage) not in (0, 1, 2, 3):
        raise ValueError(f"TLSA usage {usage!r}")
    if selector is None:
        selector = 0 if int(usage) in (0, 2) else 1
    openssl = require_tool("openssl")
    if int(selector) == 1:
        pem = _run([openssl, "x509", "-in", cert_pem_path, "-pubkey", "-noout"], "openssl x509 -pubkey")
        der = _run([openssl, "pkey", "-pubin", "-outform", "der"], "openssl pkey -pubin", input_bytes=pem)
    elif int(selector) == 0:
        der = _run([openssl, "x509", "-in", cert_pem_path, "-outform", "der"], "openssl x509 -outform der")
    else:
        raise ValueError(f"TLSA selector {selector!r}")
    if not der:
        raise AssertionError(f"no certificate data from {cert_pem_path}")
    if int(mtype) == 0:
        return der.hex()
    if int(mtype) == 1:
        return hashlib.sha256(der).hexdigest()
    if int(mtype) == 2:
        return hashlib.sha512(der).hexdigest()
    raise ValueError(f"TLSA matching type {mtype!r}")


# MARK: nsd

class SignedZone(ManagedProcess):
    """A private nsd for one test (or one test class) on 127.0.0.1 and a free UDP+TCP port (or
    `port`), authoritative for one DNSSEC-signed zone (NSEC, ECDSAP256SHA256, a key signing key and
    a zone signing key made for this instance).

    `records` are downstream.Dnsmasq's tuples, for names at or below the zone:

        ("dane.test", "MX", 10, "mx.dane.test")
        ("mx.dane.test", "A", "127.0.0.2")
        ("mx.dane.test", "AAAA", "::1")
        ("_25._tcp.mx.dane.test", "TLSA", 3, 1, 1, "9f86d0...")   # usage, selector, type, hex
        ("www.dane.test", "CNAME", "mx.dane.test")
        ("dane.test", "TXT", "v=spf1 -all")

    The zone also has its SOA and `NS ns.ZONE` with `ns.ZONE A 127.0.0.1` (unless `records` give
    ns.ZONE addresses). Names of the zone without records are NXDOMAIN (with NSEC); names outside it
    are REFUSED. TTLs are `ttl` (0 by default: nothing is cached, as with Dnsmasq).

    `tamper`: serve a copy changed after signing, so those answers are bogus: True changes the TLSA
    records (the A records when there is none), "A" / "TLSA" / "MX" / "AAAA" / "TXT" every record of
    that type, ("name", "TYPE") one RRset. `tampered` lists (name, type, signed rdata, served rdata).
    `validity`: (inception, expiration) of the signatures in seconds from now, e.g.
    (-2 * 86400, -86400) for expired signatures.

    Attributes: zone, port, address ("127.0.0.1"), upstream ("127.0.0.1@PORT" for ub_ctx_set_fwd),
    trust_anchor_file (the DS of the key signing key, for `trust-anchor-file:` or
    ub_ctx_add_ta_file), dnskey_anchor_file (the same key as a DNSKEY line), ds (the DS lines), records.
    `reload(records, tamper)` signs again with the same keys (the anchors stay valid) and restarts on
    the same port. `unbound_conf()` writes a libunbound configuration for it.
    """

    process_name = "nsd"

    def __init__(self, test, zone="dane.test", records=(), port=None, tamper=False, ttl=0,
                 validity=(-3600, 7 * 86400), start=True):
        self.test = test
        self.binary = _sbin_tool("nsd")
        self.keygen = require_tool("ldns-keygen")
        self.signzone = require_tool("ldns-signzone")
        self.root = _workdir(test, "relaygate-nsd-")
        self.zone = _name(zone).lower()
        if not self.zone or self.zone == ".":
            raise ValueError(f"zone {zone!r}")
        self.address = "127.0.0.1"
        self.fixed_port = port is not None
        self.port = port if port is not None else free_udp_tcp_port(self.address)
        self.ttl = int(ttl)
        self.validity = tuple(int(v) for v in validity)
        self.records = list(records)
        self.tamper = tamper
        self.tampered = []
        self.serial = 0
        self.proc = None
        self.runs = 0
        self.log_path = None
        self.err_path = None
        self.zone_path = os.path.join(self.root, f"{self.zone}.zone")
        self.signed_path = os.path.join(self.root, f"{self.zone}.zone.signed")
        self.served_path = os.path.join(self.root, f"{self.zone}.zone.served")
        self.conf_path = os.path.join(self.root, "nsd.conf")
        self._make_keys()
        _add_cleanup(test, self._final_stop)
        if start:
            self.start()

    @property
    def upstream(self):
        return f"{self.address}@{self.port}"

    # Keys and zone

    def _make_keys(self):
        keys = os.path.join(self.root, "keys")
        os.makedirs(keys)
        self.ksk = self._keygen(keys, ["-k"])
        self.zsk = self._keygen(keys, [])
        with open(self.ksk + ".ds") as f:
            self.ds = [l.strip() for l in f if l.strip() and not l.startswith(";")]
        with open(self.ksk + ".key") as f:
            dnskey = [l.split(";")[0].strip() for l in f if l.strip() and not l.startswith(";")]
        if not self.ds or not dnskey:
            raise AssertionError(f"ldns-keygen wrote no DS or DNSKEY for {self.zone}")
        self.trust_anchor_file = os.path.join(self.root, "trust-anchors.ds")
        with open(self.trust_anchor_file, "w") as f:
            f.write("\n".join(self.ds) + "\n")
        self.dnskey_anchor_file = os.path.join(self.root, "trust-anchors.dnskey")
        with open(self.dnskey_anchor_file, "w") as f:
            f.write("\n".join(dnskey) + "\n")

    def _keygen(self, keys, flags):
        # -r /dev/urandom: never waits for entropy. The files are written to the working folder.
        out = _run([self.keygen, "-a", ALGORITHM, "-r", "/dev/urandom"] + flags + [self.zone], "ldns-keygen",
                   cwd=keys).decode("ascii", "replace").split()
        if len(out) != 1 or not os.path.exists(os.path.join(keys, out[0] + ".private")):
            raise AssertionError(f"ldns-keygen: unexpected output {out!r}")
        return os.path.join(keys, out[0])

    def _owner(self, name):
        n = _name(name).lower()
        if n != self.zone and not n.endswith("." + self.zone):
            raise ValueError(f"{name!r} is not in zone {self.zone}")
        return n + "."

    @staticmethod
    def _target(name):
        n = _name(name)
        return "." if n in (".", "") else n + "."

    def zone_text(self):
        """The zone file before signing."""
        z = self.zone + "."
        lines = [f"$ORIGIN {z}", f"$TTL {self.ttl}",
                 f"{z} IN SOA ns.{z} hostmaster.{z} {self.serial} 3600 600 86400 {self.ttl}",
                 f"{z} IN NS ns.{z}"]
        if not any(self._owner(r[0]) == f"ns.{z}" and _kind(r) in ("A", "AAAA") for r in self.records):
            lines.append(f"ns.{z} IN A 127.0.0.1")
        for r in self.records:
            lines.append(self._record_line(r))
        return "\n".join(lines) + "\n"

    def _record_line(self, r):
        kind = _kind(r)
        owner = self._owner(r[0])
        if kind == "MX":
            _, _, pref, host = r
            return f"{owner} IN MX {int(pref)} {self._target(host)}"
        if kind == "A":
            return f"{owner} IN A {_address(r[2], 4)}"
        if kind == "AAAA":
            return f"{owner} IN AAAA {_address(r[2], 6)}"
        if kind == "CNAME":
            return f"{owner} IN CNAME {self._target(r[2])}"
        if kind == "TLSA":
            _, _, usage, selector, mtype, data = r
            data = bytes.fromhex(data).hex()
            if not data:
                raise ValueError(f"TLSA without data: {r!r}")
            return f"{owner} IN TLSA {int(usage)} {int(selector)} {int(mtype)} {data}"
        if kind == "TXT":
            return f"{owner} IN TXT {_txt_strings(r[2])}"
        raise ValueError(f"SignedZone serves MX, A, AAAA, CNAME, TLSA and TXT records, not {r!r}")

    def sign(self):
        """Writes the zone, signs it (explicit inception and expiration) and writes the file nsd
        serves (tampered when asked)."""
        self.serial = (self.serial % 4000000000) + 1
        with open(self.zone_path, "w") as f:
            f.write(self.zone_text())
        now = int(time.time())
        inception, expiration = now + self.validity[0], now + self.validity[1]
        if expiration <= inception:
            raise ValueError(f"validity {self.validity!r}: expiration before inception")
        _run([self.signzone, "-i", str(inception), "-e", str(expiration), "-o", self.zone + ".",
              "-f", self.signed_path, self.zone_path, self.zsk, self.ksk], "ldns-signzone", cwd=self.root)
        with open(self.signed_path) as f:
            signed = f.read()
        served = self._tampered(signed) if self.tamper else signed
        with open(self.served_path, "w") as f:
            f.write(served)

    _TAMPERABLE = ("TLSA", "A", "AAAA", "MX", "TXT")

    def _tampered(self, text):
        """`text` (ldns-signzone's output: NAME TTL CLASS TYPE RDATA per line) with the chosen records
        changed and their RRSIGs kept."""
        t = self.tamper
        present = {_kind(r) for r in self.records}
        if t is True:
            want_name, want_type = None, "TLSA" if "TLSA" in present else "A"
        elif isinstance(t, str):
            want_name, want_type = None, t.upper()
        elif isinstance(t, (tuple, list)) and len(t) == 2:
            want_name, want_type = self._owner(t[0]), str(t[1]).upper()
        else:
            raise ValueError(f"tamper={t!r}")
        if want_type not in self._TAMPERABLE:
            raise ValueError(f"tamper: cannot change {want_type} records")
        # Only records given in `records` (not the address of ns.ZONE added for the NS record).
        owners = {self._owner(r[0]) for r in self.records if _kind(r) == want_type}
        if want_name is not None:
            owners &= {want_name}
        self.tampered = []
        out = []
        for line in text.splitlines():
            fields = line.split(None, 4)
            if line.startswith(";") or len(fields) < 5 or fields[3].upper() != want_type \
                    or fields[0].lower() not in owners:
                out.append(line)
                continue
            rdata = fields[4].strip()  # no comments on these types (ldns writes them on DNSKEY lines)
            changed = _change_rdata(want_type, rdata)
            self.tampered.append((fields[0], want_type, rdata, changed))
            out.append("\t".join(fields[:4] + [changed]))
        if not self.tampered:
            raise AssertionError(f"tamper={t!r}: no such record in zone {self.zone}")
        return "\n".join(out) + "\n"

    def nsd_conf(self):
        """nsd's configuration: one address and port, no privilege change or chroot, every file in
        the private folder, no zone database, no remote control, zone files never written back."""
        lines = [
            "server:",
            f"    ip-address: {self.address}",
            f"    port: {self.port}",
            "    do-ip4: yes",
            "    do-ip6: no",
            "    server-count: 1",
            "    reuseport: no",
            '    username: ""',
            '    chroot: ""',
            f'    zonesdir: "{self.root}"',
            '    database: ""',
            f'    zonelistfile: "{os.path.join(self.root, "zone.list")}"',
            f'    xfrdfile: "{os.path.join(self.root, "xfrd.state")}"',
            f'    xfrdir: "{self.root}"',
            f'    pidfile: "{os.path.join(self.root, "nsd.pid")}"',
            f'    logfile: "{self.log_path}"',
            "    verbosity: 1",
            "    hide-version: yes",
            "    zonefiles-write: 0",
            "remote-control:",
            "    control-enable: no",
            "zone:",
            f'    name: "{self.zone}"',
            f'    zonefile: "{self.served_path}"',
        ]
        with open(self.conf_path, "w") as f:
            f.write("\n".join(lines) + "\n")
        return self.conf_path

    def unbound_conf(self, path=None, trust_anchor=True, forward=True):
        """Writes a libunbound configuration (for ub_ctx_config) that validates this zone: Relaygate's
        own lines (loopback allowed, the `test.` and `invalid.` local zones of RFC 6761 turned off,
        `outbound-msg-retry: 1`, `infra-host-ttl: 1`), with `trust_anchor` the `trust-anchor-file:`
        of this zone's DS, and with `forward` the forward zone "." to this server (without it, call
        ub_ctx_set_fwd(ctx, upstream) as Relaygate does). Returns the path."""
        path = path or os.path.join(self.root, "unbound.conf")
        lines = ["server:", "    do-not-query-localhost: no", '    local-zone: "test." nodefault',
                 '    local-zone: "invalid." nodefault', "    outbound-msg-retry: 1", "    infra-host-ttl: 1"]
        if trust_anchor:
            lines.append(f'    trust-anchor-file: "{self.trust_anchor_file}"')
        if forward:
            lines += ["forward-zone:", '    name: "."', f"    forward-addr: {self.upstream}"]
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        return path

    # Lifecycle

    def start(self):
        """Signs the zone, starts nsd in the foreground and waits until it answers with this zone's
        SOA serial; with a port of the kernel's choice, a port taken in between is replaced by another
        (bounded)."""
        assert self.proc is None, "nsd already running"
        if self.fixed_port and not port_free(self.address, self.port):
            raise AssertionError(f"port {self.port} of {self.address} is taken (UDP or TCP)")
        self.sign()
        for attempt in range(5):
            self.runs += 1
            self.log_path = os.path.join(self.root, f"nsd-{self.runs}.log")
            self.err_path = os.path.join(self.root, f"nsd-{self.runs}.err")
            self.nsd_conf()
            with open(self.err_path, "wb") as err:
                self.proc = subprocess.Popen([self.binary, "-d", "-c", self.conf_path], stdin=subprocess.DEVNULL,
                                             stdout=err, stderr=err)
            if self._wait_ready():
                return self
            rc = self.proc.poll()
            self.stop()
            text = self.log_text()
            if not self.fixed_port and rc is not None and "in use" in text and attempt < 4:
                self.port = free_udp_tcp_port(self.address)
                continue
            raise AssertionError(f"nsd did not start on {self.upstream} (exit status {rc}):\n{text}")
        raise AssertionError("nsd did not start")

    def _wait_ready(self):
        """True once this process answers the zone's SOA with the serial of this signing (another
        server on the same port does not count)."""
        deadline = time.monotonic() + START_TIMEOUT
        for _ in range(1000):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                return False
            a = dns_query(self.address, self.port, self.zone, "SOA", timeout=0.2)
            if a is not None and a.rcode == "NOERROR" and a.authoritative and self.proc.poll() is None:
                soa = a.values("SOA")
                if soa and len(soa[0]) >= 20 and struct.unpack("!I", soa[0][-20:-16])[0] == self.serial:
                    return True
            time.sleep(0.01)
        return False

    def reload(self, records=None, tamper=None):
        """Signs again with the same keys (`records` and `tamper` replaced when given) and restarts on
        the same port."""
        self.stop()
        if records is not None:
            self.records = list(records)
        if tamper is not None:
            self.tamper = tamper
        self.tampered = []
        self.fixed_port = True
        return self.start()

    def stop(self, timeout=STOP_TIMEOUT):
        """Stops nsd by PID (SIGTERM, wait, SIGKILL); its server and xfrd children, which it stops
        itself, are waited for and killed by PID when they outlive it. The port then answers nothing."""
        if self.proc is None:
            return None
        children = _descendants(self.proc.pid) if self.proc.poll() is None else []
        rc = _stop_process(self.proc, timeout)
        self.proc = None
        deadline = time.monotonic() + timeout
        for _ in range(int(timeout / 0.01) + 2):
            if not any(_alive(c) for c in children) or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        for c in children:
            if _alive(c):
                try:
                    os.kill(c, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        return rc

    # Logs and checks

    def log_text(self):
        """nsd's log file and its stdout/stderr for the current run."""
        text = ""
        for p in (self.log_path, self.err_path):
            if p and os.path.exists(p):
                with open(p, "rb") as f:
                    text += f.read().decode("utf-8", "replace")
        return text

    def query(self, name, qtype="A", timeout=2.0, tcp=False):
        """A DNSAnswer from this server (None on timeout)."""
        return dns_query(self.address, self.port, name, qtype, timeout=timeout, tcp=tcp)

    def dig(self, name, qtype="A", extra=("+dnssec", "+norec", "+tries=1", "+time=3")):
        """dig's output for one query to this server (with the RRSIGs by default)."""
        r = subprocess.run([require_tool("dig"), f"@{self.address}", "-p", str(self.port)] + list(extra)
                           + [name, str(qtype)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=TOOL_TIMEOUT)
        return r.stdout.decode("utf-8", "replace")

    def verify(self):
        """ldns-verify-zone on the signed zone (before any tampering); its output. AssertionError when
        the signatures do not verify."""
        r = subprocess.run([require_tool("ldns-verify-zone"), self.signed_path], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=TOOL_TIMEOUT)
        text = r.stdout.decode("utf-8", "replace")
        if r.returncode != 0:
            raise AssertionError(f"ldns-verify-zone {self.signed_path}: {text}")
        return text


def _address(address, version):
    """`address` when it is an IPv4 (4) or IPv6 (6) address; ValueError otherwise."""
    a = ipaddress.ip_address(address)
    if a.version != version:
        raise ValueError(f"not an IPv{version} address: {address!r}")
    return str(a)


def _change_rdata(rtype, rdata):
    """Other RDATA of the same type (presentation format), for a record changed after signing."""
    if rtype == "TLSA":
        parts = rdata.split()
        data = "".join(parts[3:])
        last = format(int(data[-1], 16) ^ 1, "x")
        return " ".join(parts[:3] + [data[:-1] + last])
    if rtype == "A":
        octets = rdata.split(".")
        octets[-1] = str((int(octets[-1]) + 1) % 256)
        return ".".join(octets)
    if rtype == "AAAA":
        return str(ipaddress.IPv6Address(int(ipaddress.IPv6Address(rdata)) ^ 1))
    if rtype == "MX":
        pref, host = rdata.split(None, 1)
        return f"{(int(pref) + 1) % 65536} {host}"
    if rtype == "TXT":
        return rdata + ' "x"'
    raise ValueError(f"cannot change {rtype} records")
