"""TLS end to end: STARTTLS (RFC 3207) and implicit TLS (RFC 8314) with real clients (openssl
s_client, swaks, Python's ssl and smtplib), the STARTTLS command injection probe (CVE-2011-0411),
client certificates in the relay rules, private key permissions, a new certificate on SIGHUP,
failed handshakes, SNI, the close of a TLS session, and IPv6.

Every server runs the real binary on loopback addresses only, on a configuration file written by the
test. Each test class makes its own certificates with certs/make-certs into a temporary folder.
"""

import hashlib
import os
import queue
import re
import shutil
import signal
import smtplib
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import unittest

# Importable both by discovery (-s Tests/Integration) and by file path.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (run_cli, IO_TIMEOUT, ConnectionClosed, Reply, ReplyTimeout, SMTPConn, binary, dot_stuff,
                     queued_id, require_tool, split_received, workdir)
from test_policies import PolicyServer, line_of, write

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MAKE_CERTS = os.path.join(REPO, "certs", "make-certs")
CERT_FILES = ["ca.pem", "server.pem", "server.key", "client.pem", "client.key", "other-ca.pem",
              "other-client.pem", "other-client.key", "impostor-ca.pem", "impostor-client.pem",
              "impostor-client.key", "selfsigned-client.pem", "selfsigned-client.key", "expired-client.pem",
              "expired-client.key", "notyet-client.pem", "notyet-client.key"]

MESSAGE = b"Subject: tls test\r\n\r\nhello over TLS\r\n"
SENDER = "alice@origin.test"
RCPT = "bob@destination.test"

# The listeners most tests use: one of each TLS mode.
LISTENERS = [
    ("submission", ["address 127.0.0.1:0", "tls may"]),
    ("secure", ["address 127.0.0.1:0", "tls required"]),
    ("smtps", ["address 127.0.0.1:0 [::1]:0", "tls implicit"]),
    ("plain", ["address 127.0.0.1:0", "tls none"]),
]
LOCAL_RULES = ["relay from <local>", "refuse"]

SWAKS_QUEUED = re.compile(r"<~  250 2\.0\.0 OK queued as ([0-9a-z]{16})")
SWAKS_TLS = re.compile(r"=== TLS started with cipher (TLSv[0-9.]+):([A-Z0-9_-]+):\d+")


# MARK: Certificates

def make_certs(directory, *names):
    """certs/make-certs DIR [NAMES]: a CA, a server certificate and the client certificates."""
    require_tool("openssl")
    r = subprocess.run([require_tool("bash"), MAKE_CERTS, directory] + list(names), stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=60)
    out = r.stdout.decode("utf-8", "replace")
    if r.returncode != 0:
        raise AssertionError(f"make-certs failed ({r.returncode}):\n{out}")
    missing = [f for f in CERT_FILES if not os.path.isfile(os.path.join(directory, f))]
    if missing:
        raise AssertionError(f"make-certs made no {missing}:\n{out}")
    return directory


def cert_fingerprint(pem_path):
    """SHA-256 of a PEM certificate's DER form (what a peer's getpeercert(binary_form=True) hashes to)."""
    with open(pem_path) as f:
        return hashlib.sha256(ssl.PEM_cert_to_DER_cert(f.read())).hexdigest()


def peer_fingerprint(sock):
    return hashlib.sha256(sock.getpeercert(binary_form=True)).hexdigest()


def spki_pin(pem_path):
    """The hex SHA-256 of the certificate's SubjectPublicKeyInfo, as the pins list holds it:
    openssl x509 -pubkey -noout | openssl pkey -pubin -outform der | sha256."""
    openssl = require_tool("openssl")
    pub = subprocess.run([openssl, "x509", "-in", pem_path, "-pubkey", "-noout"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, timeout=20)
    if pub.returncode != 0:
        raise AssertionError(f"openssl x509 -pubkey {pem_path}: {pub.stderr.decode(errors='replace')}")
    der = subprocess.run([openssl, "pkey", "-pubin", "-outform", "der"], input=pub.stdout,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=20)
    if der.returncode != 0 or not der.stdout:
        raise AssertionError(f"openssl pkey -pubin: {der.stderr.decode(errors='replace')}")
    return hashlib.sha256(der.stdout).hexdigest()


def tls_context(cafile, cert=None, key=None):
    """A client context that trusts only `cafile` (and presents `cert` when given)."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile)
    if cert:
        ctx.load_cert_chain(cert, key)
    return ctx


# MARK: Configuration and server

def tls_config_text(spool, ca_file, listeners, rules, certificates=(), head=()):
    lines = ["hostname relay.test", f"spool {spool}", "outbound { delivery no }"]
    if certificates:
        lines.append("tls {")
        lines += [f'    certificate "{chain}" "{key}"' for chain, key in certificates]
        lines.append("}")
    lines.append(f'ca corp file "{ca_file}"')
    lines.append("networks local { 127.0.0.1 ::1 }")
    lines += list(head)
    lines += ["limits {", "    command-timeout 10s", "    data-timeout 10s", "    shutdown-timeout 2s", "}"]
    for name, body in listeners:
        lines.append(f"listener {name} {{")
        lines += [f"    {b}" for b in body]
        lines.append("}")
    lines.append("rules {")
    lines += [f"    {r}" for r in rules]
    lines.append("}")
    return "\n".join(lines) + "\n"


class CertsFixture:
    """Certificates per test class, and servers on configuration files written per test."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.certs = tempfile.mkdtemp(prefix="relaygate-it-certs-")
        cls.addClassCleanup(shutil.rmtree, cls.certs, True)
        make_certs(cls.certs)

    def cert(self, name):
        return os.path.join(self.certs, name)

    def server_certificate(self, certs=None):
        d = certs or self.certs
        return (os.path.join(d, "server.pem"), os.path.join(d, "server.key"))

    def write_config(self, listeners=LISTENERS, rules=LOCAL_RULES, certificates=None, head=()):
        """A configuration in a fresh folder; (path, spool, text). `certificates` None: this class's server
        certificate; () for none."""
        d = workdir(self)
        spool = os.path.join(d, "spool")
        certificates = [self.server_certificate()] if certificates is None else certificates
        text = tls_config_text(spool, self.cert("ca.pem"), listeners, rules, certificates, head)
        path = write(os.path.join(d, "relaygate.conf"), text)
        return path, spool, text

    def server(self, start=True, extra_args=(), **config):
        path, spool, text = self.write_config(**config)
        s = PolicyServer(self, path, spool, start=False)
        s.extra_args += list(extra_args)
        s.config_text = text
        if start:
            s.start()
        return s


def connect(test, port, host="127.0.0.1", source=None):
    c = SMTPConn(test, host, port, source=source)
    r = c.reply()
    test.assertEqual(r.lines, ["220 relay.test ESMTP Relaygate"], f"greeting: {r}")
    return c


def read_until_close(c, timeout=IO_TIMEOUT):
    """Everything the server sends on `c` (into c.buf) until it closes; AssertionError if it does not."""
    deadline = time.monotonic() + timeout
    for _ in range(1000):
        if c.eof:
            return c.buf
        c._fill(deadline)
    raise AssertionError(f"connection still open (have {c.buf[:200]!r})")


def keywords(ehlo_reply):
    """The extension keywords of an EHLO reply."""
    return [line[4:].split(" ")[0].upper() for line in ehlo_reply.lines[1:]]


def start_tls(test, c, ctx, server_hostname="localhost", suppress_ragged_eofs=True):
    """STARTTLS on a raw connection, then the handshake on the same socket; returns the TLS socket."""
    r = c.command("STARTTLS")
    test.assertEqual(r.lines, ["220 2.0.0 Ready to start TLS"], r)
    test.assertEqual(c.buf, b"", "plaintext bytes after the 220 to STARTTLS")
    c.sock.settimeout(IO_TIMEOUT)
    c.sock = ctx.wrap_socket(c.sock, server_hostname=server_hostname, suppress_ragged_eofs=suppress_ragged_eofs)
    return c.sock


def session_of(server, sock):
    """The session id the server logged for the connection made from `sock`'s local address."""
    port = sock.getsockname()[1]
    e = server.wait_for_log(lambda e: e.get("event") == "connect" and e.get("client", "").endswith(f":{port}"),
                            what=f"connect line for client port {port}")
    return e["session"]


def session_events(server, session, event=None):
    return [e for e in server.logs() if e.get("session") == session and (event is None or e.get("event") == event)]


def tls_event(server, session):
    return server.wait_for_log(lambda e: e.get("event") == "tls" and e.get("session") == session,
                               what=f"event=tls for session {session}")


def received_of(test, server, qid):
    """(envelope, the first Received: header unfolded to one line) of a queued message."""
    files = server.queue_files()
    test.assertIn(qid, files, f"{qid} is not in the queue: {sorted(files)}")
    env, message = files[qid]
    received, _ = split_received(message)
    return env, re.sub(r"\r\n[ \t]+", " ", received.decode("utf-8", "replace")).rstrip("\r\n")


def assert_received_tls(test, server, qid, version, cipher):
    """The queued message's Received: names the protocol ESMTPS and the TLS version and cipher."""
    env, received = received_of(test, server, qid)
    test.assertRegex(received, rf" by relay\.test \(Relaygate\) \(using {re.escape(version)} with cipher "
                               rf"{re.escape(cipher)}\) with ESMTPS id {qid}[ ;]", received)
    test.assertEqual(env["client"]["protocol"], "ESMTPS", env)
    return env, received


class Child:
    """A client program driven line by line: its stdin written, its stdout read by a thread as SMTP
    replies, its stderr kept. Every read is bounded in time."""

    def __init__(self, test, args):
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.lines = queue.Queue()
        self.err = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._pump_out, daemon=True),
                        threading.Thread(target=self._pump_err, daemon=True)]
        for t in self.threads:
            t.start()
        test.addCleanup(self.stop)

    def _pump_out(self):
        for line in iter(self.proc.stdout.readline, b""):
            self.lines.put(line)
        self.lines.put(None)

    def _pump_err(self):
        for line in iter(self.proc.stderr.readline, b""):
            with self.lock:
                self.err.append(line.decode("utf-8", "replace"))

    def stderr_text(self):
        with self.lock:
            return "".join(self.err)

    def wait_stderr(self, text, timeout=IO_TIMEOUT):
        deadline = time.monotonic() + timeout
        for _ in range(int(timeout / 0.01) + 2):
            if text in self.stderr_text():
                return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        time.sleep(0.05)  # what the pump has not read yet
        raise AssertionError(f"no {text!r} from {self.proc.args[0]} (exit {self.proc.poll()}):\n{self.stderr_text()}")

    def send(self, line):
        self.proc.stdin.write(line.encode("utf-8") + b"\r\n")
        self.proc.stdin.flush()

    def reply(self, timeout=IO_TIMEOUT):
        deadline = time.monotonic() + timeout
        lines = []
        for _ in range(1000):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                raw = self.lines.get(timeout=remaining)
            except queue.Empty:
                break
            if raw is None:
                raise ConnectionClosed(f"client output ended (partial {lines!r}):\n{self.stderr_text()}")
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            lines.append(line)
            if not re.match(r"^\d{3}( |-|$)", line):
                raise AssertionError(f"not a reply line: {line!r}")
            if len(line) == 3 or line[3] == " ":
                return Reply(lines)
        raise ReplyTimeout(f"no reply in time (partial {lines!r}):\n{self.stderr_text()}")

    def command(self, line, timeout=IO_TIMEOUT):
        self.send(line)
        return self.reply(timeout)

    def wait(self, timeout=IO_TIMEOUT):
        """The exit status; AssertionError when still running after `timeout`."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.proc.args[0]} still running after {timeout}s:\n{self.stderr_text()}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        for t in self.threads:
            t.join(timeout=5)
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                f.close()
            except OSError:
                pass


def s_client(test, port, cafile, host="127.0.0.1"):
    """openssl s_client doing STARTTLS, verifying the server against `cafile`, driven line by line."""
    return Child(test, [require_tool("openssl"), "s_client", "-starttls", "smtp", "-name", "s-client.test",
                        "-connect", f"{host}:{port}", "-CAfile", cafile, "-verify_return_error",
                        "-verify_hostname", "localhost", "-brief", "-ign_eof", "-nocommands"])


_swaks_tls = []


def swaks_tls(args):
    """swaks (with its TLS support checked) run once; (exit status, output)."""
    path = require_tool("swaks")
    if not _swaks_tls:
        support = subprocess.run([path, "--support"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
        text = support.stdout.decode("utf-8", "replace")
        if "=== TLS supported" not in text:
            raise AssertionError(f"swaks has no TLS support (Debian: libnet-ssleay-perl):\n{text}")
        _swaks_tls.append(True)
    r = subprocess.run([path] + list(args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
    return r.returncode, r.stdout.decode("utf-8", "replace")


def swaks_args(port, cafile, mode="--tls", source="127.0.0.1", extra=()):
    return ["--server", "127.0.0.1", "--port", str(port), "--local-interface", source, "--from", SENDER,
            "--to", RCPT, "--helo", "swaks.client.test", "--timeout", "10", "--header", "Subject: tls test",
            mode, "--tls-verify", "--tls-ca-path", cafile] + list(extra)


# MARK: 1. Real clients

class TLSClientTests(CertsFixture, unittest.TestCase):
    def test_openssl_s_client_starttls_end_to_end(self):
        s = self.server()
        sc = s_client(self, s.listener_port("submission"), self.cert("ca.pem"))
        sc.wait_stderr("CONNECTION ESTABLISHED")
        err = sc.stderr_text()
        self.assertIn("Verification: OK", err)
        version = re.search(r"Protocol version: (\S+)", err).group(1)
        cipher = re.search(r"Ciphersuite: (\S+)", err).group(1)
        self.assertIn(version, ("TLSv1.2", "TLSv1.3"), err)
        r = sc.command("EHLO s-client.test")
        self.assertEqual(r.lines[0], "250-relay.test", r)
        self.assertNotIn("STARTTLS", keywords(r))
        self.assertEqual(sc.command(f"MAIL FROM:<{SENDER}>").head, "250 2.1.0")
        self.assertEqual(sc.command(f"RCPT TO:<{RCPT}>").head, "250 2.1.5")
        self.assertEqual(sc.command("DATA").code, 354)
        for line in dot_stuff(MESSAGE).decode().split("\r\n")[:-1]:
            sc.send(line)
        qid = queued_id(sc.reply())
        self.assertEqual(sc.command("QUIT").head, "221 2.0.0")
        sc.wait()   # the exit status is checked by the close_notify test
        self.assertEqual([e["id"] for e in s.queue_list()], [qid])
        assert_received_tls(self, s, qid, version, cipher)
        (opened,) = s.logs("connect")
        e = tls_event(s, opened["session"])
        self.assertEqual((e["result"], e["version"], e["cipher"]), ("established", version, cipher), e)
        self.assertNotIn("client_cert", e)
        self.assertEqual([x["name"] for x in session_events(s, opened["session"], "ehlo")],
                         ["s-client.test", "s-client.test"])

    def test_swaks_starttls_relays(self):
        s = self.server()
        rc, out = swaks_tls(swaks_args(s.listener_port("submission"), self.cert("ca.pem"), "--tls"))
        self.assertEqual(rc, 0, out)
        self.assertIn("<-  250 STARTTLS", out)
        self.assertIn("<-  220 2.0.0 Ready to start TLS", out)
        self.assertNotRegex(out, r"<~  250[ -]STARTTLS")
        m = SWAKS_TLS.search(out)
        self.assertIsNotNone(m, out)
        ids = SWAKS_QUEUED.findall(out)
        self.assertEqual(len(ids), 1, out)
        self.assertEqual([e["id"] for e in s.queue_list()], ids)
        assert_received_tls(self, s, ids[0], m.group(1), m.group(2))

    def test_swaks_implicit_tls_relays(self):
        s = self.server()
        rc, out = swaks_tls(swaks_args(s.listener_port("smtps"), self.cert("ca.pem"), "--tlsc"))
        self.assertEqual(rc, 0, out)
        self.assertIn("<~  220 relay.test ESMTP Relaygate", out)
        self.assertNotRegex(out, r"(?m)^<-  ")   # nothing in clear
        self.assertNotRegex(out, r"<~  250[ -]STARTTLS")
        m = SWAKS_TLS.search(out)
        self.assertIsNotNone(m, out)
        ids = SWAKS_QUEUED.findall(out)
        self.assertEqual(len(ids), 1, out)
        env, _ = assert_received_tls(self, s, ids[0], m.group(1), m.group(2))
        self.assertEqual(env["client"]["listener"], "smtps")
        (opened,) = s.logs("connect")
        events = [e["event"] for e in session_events(s, opened["session"])]
        self.assertLess(events.index("tls"), events.index("ehlo"), events)

    def test_plaintext_client_on_the_implicit_port_gets_no_greeting(self):
        s = self.server()
        c = SMTPConn(self, "127.0.0.1", s.listener_port("smtps"))
        self.assertTrue(c.silent_for(0.5), f"the implicit TLS port spoke in clear: {c.buf!r}")
        c.send(b"EHLO plain.client.test\r\n")
        read_until_close(c)
        self.assertNotIn(b"220", c.buf)
        self.assertNotIn(b"250", c.buf)
        # At most a TLS alert record (content type 21) before the close.
        self.assertTrue(c.buf == b"" or c.buf[0] == 0x15, c.buf)
        session = session_of(s, c.sock)
        e = tls_event(s, session)
        self.assertEqual(e["result"], "failed", e)
        self.assertTrue(e.get("reason"), e)
        self.assertFalse(session_events(s, session, "ehlo"))

    def test_smtplib_starttls_then_sendmail(self):
        s = self.server()
        with smtplib.SMTP("127.0.0.1", s.listener_port("submission"), local_hostname="py.client.test",
                          timeout=10) as c:
            c.ehlo()
            self.assertTrue(c.has_extn("starttls"), c.esmtp_features)
            self.assertEqual(c.starttls(context=tls_context(self.cert("ca.pem"))), (220, b"2.0.0 Ready to start TLS"))
            c.ehlo()
            self.assertFalse(c.has_extn("starttls"), c.esmtp_features)
            version, cipher = c.sock.version(), c.sock.cipher()[0]
            self.assertEqual(peer_fingerprint(c.sock), cert_fingerprint(self.cert("server.pem")))
            self.assertEqual(c.sendmail(SENDER, [RCPT], MESSAGE), {})
        (listed,) = s.queue_list()
        self.assertEqual((listed["sender"], [r["address"] for r in listed["recipients"]]), (SENDER, [RCPT]))
        assert_received_tls(self, s, listed["id"], version, cipher)

    def test_implicit_tls_over_ipv6(self):
        s = self.server()
        port6 = s.listener_port("smtps", family6=True)
        with smtplib.SMTP_SSL("::1", port6, local_hostname="py6.client.test", timeout=10,
                              context=tls_context(self.cert("ca.pem"))) as c:
            code, _ = c.ehlo()
            self.assertEqual(code, 250)
            self.assertFalse(c.has_extn("starttls"), c.esmtp_features)
            version, cipher = c.sock.version(), c.sock.cipher()[0]
            self.assertEqual(c.sendmail(SENDER, [RCPT], MESSAGE), {})
        (listed,) = s.queue_list()
        self.assertEqual(listed["client"]["address"], "::1")
        self.assertEqual(listed["client"]["listener"], "smtps")
        _, received = assert_received_tls(self, s, listed["id"], version, cipher)
        self.assertIn("([IPv6:::1])", received)
        (opened,) = s.logs("connect")
        self.assertTrue(opened["client"].startswith("[::1]:"), opened)
        self.assertEqual(tls_event(s, opened["session"])["result"], "established")

    def test_tls_cert_option_offers_starttls_where_the_configuration_names_no_certificate(self):
        listeners = [("default", ["address 127.0.0.1:0"])]
        without = self.server(listeners=listeners, certificates=())
        c = connect(self, without.listener_port("default"))
        self.assertNotIn("STARTTLS", keywords(c.ehlo()))
        self.assertEqual(c.command("STARTTLS").head, "502 5.5.1")
        chain, key = self.server_certificate()
        s = self.server(listeners=listeners, certificates=(), extra_args=["--tls-cert", chain, "--tls-key", key])
        c = connect(self, s.listener_port("default"))
        self.assertIn("STARTTLS", keywords(c.ehlo()))
        tls = start_tls(self, c, tls_context(self.cert("ca.pem")))
        self.assertEqual(peer_fingerprint(tls), cert_fingerprint(chain))
        c.ehlo()
        qid = queued_id(c.send_message(SENDER, [RCPT], dot_stuff(MESSAGE), ehlo=False))
        assert_received_tls(self, s, qid, tls.version(), tls.cipher()[0])

    def test_sni_chooses_the_certificate(self):
        other = make_certs(workdir(self), "mail.other.test")
        s = self.server(certificates=[self.server_certificate(), self.server_certificate(other)])
        ctx = tls_context(self.cert("ca.pem"))
        ctx.load_verify_locations(os.path.join(other, "ca.pem"))
        ctx.check_hostname = False
        first, second = cert_fingerprint(self.cert("server.pem")), cert_fingerprint(os.path.join(other, "server.pem"))
        for sni, want in [("mail.other.test", second), ("MAIL.OTHER.TEST", second), ("localhost", first),
                          ("unknown.test", first), (None, first)]:
            with self.subTest(sni=sni):
                c = connect(self, s.listener_port("submission"))
                c.ehlo()
                tls = start_tls(self, c, ctx, server_hostname=sni)
                self.assertEqual(peer_fingerprint(tls), want)
                self.assertEqual(c.ehlo().lines[0], "250-relay.test")
                e = tls_event(s, session_of(s, tls))
                if sni is None:
                    self.assertNotIn("sni", e)
                else:
                    self.assertEqual(e.get("sni", "").lower(), sni.lower(), e)

    def test_quit_over_tls_ends_with_close_notify(self):
        # After the 221 to QUIT a TLS session ends with the server's close_notify (RFC 8446 6.1), not a
        # bare TCP close: the client must be able to tell the end from a truncation.
        s = self.server()
        ctx = tls_context(self.cert("ca.pem"))
        for listener in ("submission", "smtps"):
            with self.subTest(listener=listener):
                if listener == "submission":
                    c = connect(self, s.listener_port(listener))
                    c.ehlo()
                    start_tls(self, c, ctx, suppress_ragged_eofs=False)
                else:
                    c = SMTPConn(self, "127.0.0.1", s.listener_port(listener))
                    c.sock = ctx.wrap_socket(c.sock, server_hostname="localhost", suppress_ragged_eofs=False)
                    self.assertEqual(c.reply().code, 220)
                c.ehlo()
                self.assertEqual(c.command("QUIT").head, "221 2.0.0")
                self.assertEqual(c.buf, b"")
                try:
                    data = c.sock.recv(4096)
                except ssl.SSLEOFError as e:
                    self.fail(f"the server closed the TCP connection without close_notify after 221: {e}")
                self.assertEqual(data, b"")
        with self.subTest(client="openssl s_client"):
            sc = s_client(self, s.listener_port("submission"), self.cert("ca.pem"))
            sc.wait_stderr("CONNECTION ESTABLISHED")
            self.assertEqual(sc.command("EHLO s-client.test").code, 250)
            self.assertEqual(sc.command("QUIT").head, "221 2.0.0")
            rc = sc.wait()
            err = sc.stderr_text()
            self.assertNotIn("unexpected eof", err)
            self.assertEqual(rc, 0, err)


# MARK: 2. The STARTTLS dialogue

class StartTLSDialogueTests(CertsFixture, unittest.TestCase):
    def setUp(self):
        self.s = self.server()
        self.ctx = tls_context(self.cert("ca.pem"))

    def conn(self, listener="submission"):
        return connect(self, self.s.listener_port(listener))

    def expect(self, c, line, head):
        r = c.command(line)
        self.assertEqual(r.head, head, f"{line!r} -> {r}")
        return r

    def test_ehlo_advertises_starttls_before_tls_only(self):
        c = self.conn()
        before = keywords(c.ehlo())
        self.assertIn("STARTTLS", before)
        start_tls(self, c, self.ctx)
        after = keywords(c.ehlo())
        self.assertNotIn("STARTTLS", after)
        # Everything else is still offered (more may be, such as AUTH once the session is encrypted).
        self.assertEqual([k for k in after if k in before], [k for k in before if k != "STARTTLS"], after)

    def test_second_starttls_is_refused(self):
        c = self.conn()
        c.ehlo()
        start_tls(self, c, self.ctx)
        self.expect(c, "STARTTLS", "503 5.5.1")
        c.ehlo()
        self.expect(c, "STARTTLS", "503 5.5.1")
        self.expect(c, "NOOP", "250 2.0.0")
        qid = queued_id(c.send_message(SENDER, [RCPT], dot_stuff(MESSAGE), ehlo=False))
        self.assertEqual([e["id"] for e in self.s.queue_list()], [qid])

    def test_starttls_with_an_argument_is_501(self):
        c = self.conn()
        c.ehlo()
        self.expect(c, "STARTTLS now", "501 5.5.4")
        # Still plaintext, and STARTTLS still works.
        self.expect(c, "NOOP", "250 2.0.0")
        start_tls(self, c, self.ctx)
        self.assertEqual(c.ehlo().lines[0], "250-relay.test")

    def test_starttls_inside_a_transaction_is_refused(self):
        c = self.conn()
        c.ehlo()
        self.expect(c, f"MAIL FROM:<{SENDER}>", "250 2.1.0")
        self.expect(c, "STARTTLS", "503 5.5.1")
        self.expect(c, "RSET", "250 2.0.0")
        start_tls(self, c, self.ctx)

    def test_mail_before_tls_on_a_required_listener_is_530(self):
        c = self.conn("secure")
        self.assertIn("STARTTLS", keywords(c.ehlo()))
        self.expect(c, f"MAIL FROM:<{SENDER}>", "530 5.7.0")
        self.assertEqual(c.command(f"RCPT TO:<{RCPT}>").code, 503)
        start_tls(self, c, self.ctx)
        self.assertNotIn("STARTTLS", keywords(c.ehlo()))
        qid = queued_id(c.send_message(SENDER, [RCPT], dot_stuff(MESSAGE), ehlo=False))
        (listed,) = self.s.queue_list()
        self.assertEqual((listed["id"], listed["client"]["listener"]), (qid, "secure"))

    def test_mail_after_starttls_needs_a_new_ehlo(self):
        c = self.conn()
        c.ehlo()
        start_tls(self, c, self.ctx)
        self.assertEqual(c.command(f"MAIL FROM:<{SENDER}>").head, "503 5.5.1")
        c.ehlo()
        self.expect(c, f"MAIL FROM:<{SENDER}>", "250 2.1.0")

    def test_no_starttls_on_a_listener_without_tls(self):
        c = self.conn("plain")
        self.assertNotIn("STARTTLS", keywords(c.ehlo()))
        self.expect(c, "STARTTLS", "502 5.5.1")
        self.expect(c, "NOOP", "250 2.0.0")

    def test_implicit_tls_session_offers_no_starttls(self):
        c = SMTPConn(self, "127.0.0.1", self.s.listener_port("smtps"))
        c.sock = self.ctx.wrap_socket(c.sock, server_hostname="localhost")
        self.assertEqual(c.reply().lines, ["220 relay.test ESMTP Relaygate"])
        self.assertNotIn("STARTTLS", keywords(c.ehlo()))
        self.expect(c, "STARTTLS", "503 5.5.1")

    def injection_probe(self, injected):
        """RFC 3207 4.2 / CVE-2011-0411: a command sent in clear in the same packet as STARTTLS must be
        thrown away, not answered inside TLS."""
        c = self.conn()
        c.ehlo()
        c.send(b"STARTTLS\r\n" + injected)
        r = c.reply()
        self.assertEqual(r.lines, ["220 2.0.0 Ready to start TLS"], r)
        self.assertTrue(c.silent_for(0.3), f"plaintext after the 220 to STARTTLS: {c.buf!r}")
        c.sock.settimeout(IO_TIMEOUT)
        c.sock = self.ctx.wrap_socket(c.sock, server_hostname="localhost")
        r = c.command("EHLO probe.client.test")
        self.assertEqual(r.lines[0], "250-relay.test",
                         f"the first reply inside TLS is not the one to EHLO (the injected command was answered): {r}")
        self.assertTrue(c.silent_for(0.3), f"more inside TLS after the EHLO reply: {c.buf!r}")
        session = session_of(self.s, c.sock)
        e = self.s.wait_for_log(lambda e: e.get("event") == "starttls" and e.get("session") == session,
                                what="event=starttls")
        self.assertGreater(int(e["discarded"]), 0, e)
        self.assertEqual(int(e["discarded"]), len(injected), e)
        return c

    def test_starttls_injection_of_rset_is_discarded(self):
        c = self.injection_probe(b"RSET\r\n")
        self.expect(c, "NOOP", "250 2.0.0")

    def test_starttls_injection_of_mail_is_discarded(self):
        c = self.injection_probe(b"MAIL FROM:<x@y>\r\n")
        # The injected MAIL began no transaction inside TLS.
        self.assertEqual(c.command(f"RCPT TO:<{RCPT}>").head, "503 5.5.1")
        qid = queued_id(c.send_message(SENDER, [RCPT], dot_stuff(MESSAGE), ehlo=False))
        (listed,) = self.s.queue_list()
        self.assertEqual((listed["id"], listed["sender"]), (qid, SENDER))

    def test_failed_handshake_closes_the_connection(self):
        c = self.conn()
        c.ehlo()
        self.expect(c, "STARTTLS", "220 2.0.0")
        session = session_of(self.s, c.sock)
        c.send(b"this is no TLS ClientHello\r\n" * 4)
        read_until_close(c)
        # Nothing in clear: at most a TLS alert record (content type 21).
        self.assertTrue(c.buf == b"" or c.buf[0] == 0x15, c.buf)
        e = tls_event(self.s, session)
        self.assertEqual(e["result"], "failed", e)
        self.assertTrue(e.get("reason"), e)
        self.s.wait_for_log(lambda e: e.get("event") == "disconnect" and e.get("session") == session,
                            what="disconnect of the failed session")
        # The server goes on.
        c2 = self.conn()
        c2.ehlo()
        start_tls(self, c2, self.ctx)
        self.assertEqual(c2.ehlo().lines[0], "250-relay.test")


# MARK: 3. Client certificates in the rules

class ClientCertificateTests(CertsFixture, unittest.TestCase):
    LISTENER = [("submission", ["address 127.0.0.1:0", "tls may", "client-certificates corp"])]
    RULES = ["relay tls certificate ca corp", "refuse"]

    def cert_session(self, s, name):
        """A session from 127.0.0.1 that presents NAME.pem (None: no certificate) after STARTTLS;
        (RCPT reply (code, text), queue id or None, session id)."""
        cert, key = (self.cert(f"{name}.pem"), self.cert(f"{name}.key")) if name else (None, None)
        ctx = tls_context(self.cert("ca.pem"), cert, key)
        with smtplib.SMTP("127.0.0.1", s.listener_port("submission"), local_hostname="cert.client.test",
                          timeout=10, source_address=("127.0.0.1", 0)) as c:
            c.ehlo()
            code, text = c.starttls(context=ctx)
            self.assertEqual(code, 220, text)
            # The TLS session goes on whatever the certificate.
            self.assertEqual(c.ehlo()[0], 250)
            session = session_of(s, c.sock)
            code, text = c.mail(SENDER)
            self.assertEqual(code, 250, text)
            rcpt = c.rcpt(RCPT)
            qid = None
            if rcpt[0] == 250:
                code, text = c.data(MESSAGE)
                self.assertEqual(code, 250, text)
                qid = re.match(rb"2\.0\.0 OK queued as ([0-9a-z]{16})$", text).group(1).decode()
        return (rcpt[0], rcpt[1].decode("utf-8", "replace")), qid, session

    def assert_refused_by_final_rule(self, s, session, rcpt):
        self.assertEqual(rcpt[0], 550, rcpt)
        self.assertTrue(rcpt[1].startswith("5.7.1 "), rcpt)
        final = line_of(s.config_text, "refuse", start=line_of(s.config_text, "rules {"))
        s.wait_for_log(lambda e: e.get("event") == "disconnect" and e.get("session") == session, what="disconnect")
        (refuse,) = session_events(s, session, "refuse")
        self.assertEqual((refuse["stage"], refuse["code"], refuse["rule"]),
                         ("rcpt", "550", f"{s.config_path}:{final}"), refuse)

    def test_trusted_client_certificate_relays(self):
        s = self.server(listeners=self.LISTENER, rules=self.RULES)
        rcpt, qid, session = self.cert_session(s, "client")
        self.assertEqual(rcpt[0], 250, rcpt)
        e = tls_event(s, session)
        self.assertEqual((e["result"], e["verified"], e["client_cert"], e["subject"]),
                         ("established", "corp", "sha256:" + spki_pin(self.cert("client.pem")), "CN=alice"), e)
        self.assertNotIn("reason", e)
        (accepted,) = session_events(s, session, "rcpt")
        relay = line_of(s.config_text, "relay tls certificate ca corp")
        self.assertEqual((accepted["verdict"], accepted["rule"]), ("relay", f"{s.config_path}:{relay}"))
        self.assertEqual([x["id"] for x in s.queue_list()], [qid])
        with self.subTest(client="swaks"):
            rc, out = swaks_tls(swaks_args(s.listener_port("submission"), self.cert("ca.pem"), "--tls",
                                           extra=["--tls-cert", self.cert("client.pem"),
                                                  "--tls-key", self.cert("client.key")]))
            self.assertEqual(rc, 0, out)
            ids = SWAKS_QUEUED.findall(out)
            self.assertEqual(len(ids), 1, out)
            self.assertEqual(sorted(x["id"] for x in s.queue_list()), sorted([qid] + ids))

    def test_the_rules_relay_nothing_else_from_the_same_client(self):
        s = self.server(listeners=self.LISTENER, rules=self.RULES)
        # Plaintext, from 127.0.0.1.
        c = connect(self, s.listener_port("submission"), source="127.0.0.1")
        c.ehlo()
        self.assertEqual(c.command(f"MAIL FROM:<{SENDER}>").head, "250 2.1.0")
        r = c.command(f"RCPT TO:<{RCPT}>")
        self.assertEqual(r.head, "550 5.7.1", r)
        # TLS without a certificate.
        rcpt, qid, session = self.cert_session(s, None)
        self.assert_refused_by_final_rule(s, session, rcpt)
        e = tls_event(s, session)
        self.assertEqual(e["result"], "established", e)
        self.assertNotIn("client_cert", e)
        self.assertEqual(s.queue_list(), [])

    def test_untrusted_certificates_pass_tls_but_are_refused_at_rcpt(self):
        s = self.server(listeners=self.LISTENER, rules=self.RULES)
        cases = [
            ("other-client", r"unable to get local issuer certificate"),
            ("impostor-client", r"unable to get local issuer certificate|certificate signature failure"),
            ("selfsigned-client", r"self.signed certificate"),
            ("expired-client", r"certificate has expired"),
            ("notyet-client", r"certificate is not yet valid"),
        ]
        for name, why in cases:
            with self.subTest(certificate=name):
                rcpt, qid, session = self.cert_session(s, name)
                self.assert_refused_by_final_rule(s, session, rcpt)
                self.assertIsNone(qid)
                e = tls_event(s, session)
                self.assertEqual((e["result"], e["verified"], e["client_cert"]),
                                 ("established", "none", "sha256:" + spki_pin(self.cert(f"{name}.pem"))), e)
                self.assertRegex(e.get("reason", ""), rf"^corp: ({why})$", e)
        self.assertEqual(s.queue_list(), [])

    def test_pinned_public_key_relays(self):
        pin = spki_pin(self.cert("client.pem"))
        self.assertRegex(pin, r"^[0-9a-f]{64}$")
        s = self.server(listeners=self.LISTENER, rules=["relay tls certificate pin <laptops>", "refuse"],
                        head=[f"pins laptops {{ sha256:{pin} }}"])
        rcpt, qid, session = self.cert_session(s, "client")
        self.assertEqual(rcpt[0], 250, rcpt)
        self.assertEqual(tls_event(s, session)["client_cert"], f"sha256:{pin}")
        (accepted,) = session_events(s, session, "rcpt")
        relay = line_of(s.config_text, "relay tls certificate pin <laptops>")
        self.assertEqual(accepted["rule"], f"{s.config_path}:{relay}")
        rcpt, other, session = self.cert_session(s, "other-client")
        self.assert_refused_by_final_rule(s, session, rcpt)
        self.assertEqual([x["id"] for x in s.queue_list()], [qid])


# MARK: 4. Private key permissions

class KeyPermissionTests(CertsFixture, unittest.TestCase):
    def copy_certificate(self, mode):
        d = workdir(self)
        for f in ("server.pem", "server.key"):
            shutil.copy(self.cert(f), os.path.join(d, f))
        key = os.path.join(d, "server.key")
        os.chmod(key, mode)
        return os.path.join(d, "server.pem"), key

    def serve_refused(self, args):
        """`relaygate serve ARGS` must exit non-zero without listening; returns its output."""
        p = subprocess.Popen([binary(), "serve"] + args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT)
        try:
            out, _ = p.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            out, _ = p.communicate(timeout=10)
            self.fail(f"serve kept running with a private key readable by others:\n{out.decode(errors='replace')}")
        text = out.decode("utf-8", "replace")
        self.assertNotEqual(p.returncode, 0, text)
        self.assertNotIn("event=listening", text)
        return text

    def test_serve_refuses_a_private_key_readable_by_others(self):
        chain, key = self.copy_certificate(0o644)
        path, spool, _ = self.write_config(listeners=LISTENERS[:1], certificates=[(chain, key)])
        text = self.serve_refused(["--config", path])
        self.assertIn(key, text)
        self.assertIn("readable by others", text)
        # `relaygate check` reports it at the certificate line, as serve would refuse it.
        r = run_cli(["check", "--config", path])
        self.assertEqual(r.returncode, 1, r.stdout)
        self.assertRegex(r.stdout.decode(), rf"{re.escape(path)}:\d+:\d+: TLS: private key {re.escape(key)} is readable by others")
        # With --tls-cert/--tls-key too.
        path, spool, _ = self.write_config(listeners=[("default", ["address 127.0.0.1:0"])], certificates=())
        text = self.serve_refused(["--config", path, "--tls-cert", chain, "--tls-key", key])
        self.assertIn(key, text)
        self.assertIn("readable by others", text)
        # The same files with the key at 0600 serve.
        os.chmod(key, 0o600)
        s = PolicyServer(self, path, spool, start=False)
        s.extra_args += ["--tls-cert", chain, "--tls-key", key]
        s.start()
        c = connect(self, s.listener_port("default"))
        c.ehlo()
        self.assertEqual(peer_fingerprint(start_tls(self, c, tls_context(self.cert("ca.pem")))), cert_fingerprint(chain))


# MARK: 5. Reload

class ReloadTests(CertsFixture, unittest.TestCase):
    def test_sighup_serves_a_new_certificate_and_open_sessions_finish(self):
        second = make_certs(workdir(self))
        s = self.server()
        port = s.listener_port("submission")
        old, new = cert_fingerprint(self.cert("server.pem")), cert_fingerprint(os.path.join(second, "server.pem"))
        self.assertNotEqual(old, new)
        # A session opened before the reload, in the middle of its transaction.
        a = connect(self, port)
        a.ehlo()
        tls_a = start_tls(self, a, tls_context(self.cert("ca.pem")))
        self.assertEqual(peer_fingerprint(tls_a), old)
        a.ehlo()
        self.assertEqual(a.command(f"MAIL FROM:<{SENDER}>").head, "250 2.1.0")
        self.assertEqual(a.command(f"RCPT TO:<{RCPT}>").head, "250 2.1.5")
        # The configuration now names the second certificate.
        text = s.config_text.replace(self.certs + "/server.", second + "/server.")
        self.assertNotEqual(text, s.config_text)
        write(s.config_path, text)
        s.signal(signal.SIGHUP)
        e = s.wait_for_log(lambda e: e.get("event") == "reload", what="event=reload")
        self.assertEqual(e["status"], "ok", s.log_text())
        # The old session finishes.
        self.assertEqual(a.command("DATA").code, 354)
        a.send(dot_stuff(MESSAGE))
        qid_a = queued_id(a.reply())
        self.assertEqual(a.command("QUIT").head, "221 2.0.0")
        # A new session gets the new certificate (and the old CA no longer verifies it).
        b = connect(self, port)
        b.ehlo()
        tls_b = start_tls(self, b, tls_context(os.path.join(second, "ca.pem")))
        self.assertEqual(peer_fingerprint(tls_b), new)
        b.ehlo()
        qid_b = queued_id(b.send_message(SENDER, [RCPT], dot_stuff(MESSAGE), ehlo=False))
        c = connect(self, port)
        c.ehlo()
        with self.assertRaises(ssl.SSLCertVerificationError):
            start_tls(self, c, tls_context(self.cert("ca.pem")))
        self.assertEqual(sorted(x["id"] for x in s.queue_list()), sorted([qid_a, qid_b]))
        assert_received_tls(self, s, qid_a, tls_a.version(), tls_a.cipher()[0])
        assert_received_tls(self, s, qid_b, tls_b.version(), tls_b.cipher()[0])

    def test_reload_with_an_unusable_key_keeps_the_running_certificate(self):
        s = self.server()
        d = workdir(self)
        for f in ("server.pem", "server.key"):
            shutil.copy(self.cert(f), os.path.join(d, f))
        os.chmod(os.path.join(d, "server.key"), 0o644)
        write(s.config_path, s.config_text.replace(self.certs + "/server.", d + "/server."))
        s.signal(signal.SIGHUP)
        e = s.wait_for_log(lambda e: e.get("event") == "reload", what="event=reload")
        self.assertEqual(e["status"], "refused", s.log_text())
        self.assertTrue([x for x in s.logs("config") if os.path.join(d, "server.key") in x.get("message", "")],
                        s.log_text())
        c = connect(self, s.listener_port("submission"))
        c.ehlo()
        tls = start_tls(self, c, tls_context(self.cert("ca.pem")))
        self.assertEqual(peer_fingerprint(tls), cert_fingerprint(self.cert("server.pem")))


if __name__ == "__main__":
    unittest.main()
