"""Shared harness for Relaygate's integration tests.

Everything here drives real parts: the real `relaygate` binary (path in $RELAYGATE), real sockets on
127.0.0.0/8 and ::1 only, and the real spool on disk. Servers listen on port 0 and are found through
their `event=listening` log lines; they are stopped by PID (SIGTERM, wait, SIGKILL). Every wait is
bounded both in iterations and in time.
"""

import errno
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time

BINARY = os.environ.get("RELAYGATE", "/work/main/.build/debug/relaygate")

START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0
IO_TIMEOUT = 5.0


def binary():
    """The binary under test; waits briefly while it is being replaced by a rebuild."""
    deadline = time.monotonic() + 30.0
    for _ in range(300):
        if os.path.isfile(BINARY) and os.access(BINARY, os.X_OK):
            return BINARY
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)
    raise AssertionError(f"relaygate binary not found or not executable: {BINARY}")


def require_tool(name):
    """A tool the tests need; missing it is a failure, never a skip."""
    path = shutil.which(name)
    if path is None:
        raise AssertionError(f"required tool '{name}' is not installed")
    return path


def run_cli(args, timeout=20.0, input_bytes=None):
    """Runs `relaygate ARGS...`; returns CompletedProcess with bytes stdout/stderr."""
    return subprocess.run([binary()] + list(args), input=input_bytes, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, timeout=timeout)


def workdir(test):
    """A fresh temporary directory removed when the test ends."""
    d = tempfile.mkdtemp(prefix="relaygate-it-")
    test.addCleanup(shutil.rmtree, d, True)
    return d


# MARK: Helpers for the test servers (backends.py, downstream.py, dnssec.py)

def add_cleanup(owner, fn, *args):
    """Registers a cleanup on a test case, or on a test class (from setUpClass)."""
    if isinstance(owner, type):
        owner.addClassCleanup(fn, *args)
    else:
        owner.addCleanup(fn, *args)


def owner_workdir(owner, prefix):
    """A temporary folder for a test case, or (from setUpClass) for a whole test class."""
    if not isinstance(owner, type):
        return workdir(owner)
    d = tempfile.mkdtemp(prefix=prefix)
    owner.addClassCleanup(shutil.rmtree, d, True)
    return d


def sbin_tool(name):
    """Like require_tool, also looking in /usr/sbin and /sbin (not always on a non-login PATH)."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if path is None:
        raise AssertionError(f"required tool '{name}' is not installed")
    return path


def stop_process(proc, timeout=STOP_TIMEOUT):
    """SIGTERM, wait, SIGKILL, by PID. Returns the exit status (None when it had to be killed)."""
    rc = proc.poll()
    if rc is not None:
        return rc
    try:
        proc.send_signal(signal.SIGCONT)  # in case it was frozen
        proc.send_signal(signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)
        return None


def make_certs(owner, *names):
    """Development certificates (certs/make-certs) for a test or a class; extra DNS names for the
    server certificate. Returns the folder."""
    d = os.path.join(owner_workdir(owner, "relaygate-certs-"), "certs")
    subprocess.run([os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "certs", "make-certs"), d]
                   + list(names), check=True, stdout=subprocess.DEVNULL, timeout=60)
    return d


class ManagedProcess:
    """The lifecycle a test server shares: `pid`, `running`, `stop` by PID (SIGTERM, wait, SIGKILL),
    `restart`, `freeze`/`thaw` (SIGSTOP/SIGCONT: a hung server), and a final stop registered as a
    cleanup that fails the test when the process died on its own. A subclass sets `self.proc` (a
    Popen or None) and `process_name`, and has `start()` and `log_text()`."""

    process_name = "process"

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=STOP_TIMEOUT):
        if self.proc is None:
            return None
        rc = stop_process(self.proc, timeout)
        self.proc = None
        return rc

    def restart(self):
        self.stop()
        return self.start()

    def freeze(self):
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self):
        self.proc.send_signal(signal.SIGCONT)

    def death_report(self):
        return "log:\n" + self.log_text()

    def _final_stop(self):
        if self.proc is None:
            return
        died = self.proc.poll()
        self.stop()
        if died is not None:
            raise AssertionError(f"{self.process_name} exited on its own (status {died}) during the test; "
                                 f"{self.death_report()}")


# MARK: Logs

_TEXT_FIELD = re.compile(r'([A-Za-z_][A-Za-z0-9_-]*)=("(?:[^"\\]|\\.)*"|[^ ]*)')


def _unquote(v):
    if not (len(v) >= 2 and v.startswith('"') and v.endswith('"')):
        return v
    v = v[1:-1]
    out, i = [], 0
    while i < len(v):
        c = v[i]
        if c == "\\" and i + 1 < len(v):
            n = v[i + 1]
            if n == "x" and i + 3 < len(v):
                out.append(chr(int(v[i + 2:i + 4], 16)))
                i += 4
                continue
            out.append(n)
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


def parse_log_line(line, fmt="text"):
    """One log line as a dict (text `key=value` or JSON); None when it is not a log line."""
    line = line.rstrip("\n")
    if not line:
        return None
    if fmt == "json":
        try:
            obj = json.loads(line)
        except ValueError:
            return None
        return obj if isinstance(obj, dict) else None
    fields = {}
    for m in _TEXT_FIELD.finditer(line):
        fields[m.group(1)] = _unquote(m.group(2))
    return fields if "event" in fields else None


# MARK: Configuration

def config_text(spool, listeners=("127.0.0.1:0",), limits=None, smtp=None, hostname="relay.test", writers=None,
                delivery=False):
    """A configuration file for tests: short timeouts unless told otherwise, and no delivery (what is
    accepted stays queued; no test sends anything anywhere unless it asks)."""
    base_limits = {
        "command-timeout": "10s",
        "data-timeout": "10s",
        "shutdown-timeout": "2s",
    }
    base_limits.update(limits or {})
    lines = [f"hostname {hostname}", f"spool {spool}", "listener default {"]
    lines += [f"    address {a}" for a in listeners]
    lines.append("}")
    lines.append("limits {")
    lines += [f"    {k} {v}" for k, v in base_limits.items()]
    lines.append("}")
    if smtp:
        lines.append("smtp {")
        lines += [f"    {k} {v}" for k, v in smtp.items()]
        lines.append("}")
    if writers is not None:
        lines += ["queue {", f"    writers {writers}", "}"]
    if not delivery:
        lines += ["outbound {", "    delivery no", "}"]
    return "\n".join(lines) + "\n"


# MARK: Server

class Server:
    """One `relaygate serve` process on a private spool."""

    def __init__(self, test, listeners=("127.0.0.1:0",), limits=None, smtp=None, hostname="relay.test",
                 log_format="text", root=None, spool=None, writers=None, extra_args=(), start=True):
        self.test = test
        self.root = root or workdir(test)
        self.spool = spool or os.path.join(self.root, "spool")
        self.config_path = os.path.join(self.root, "relaygate.conf")
        with open(self.config_path, "w") as f:
            f.write(config_text(self.spool, listeners, limits, smtp, hostname, writers))
        self.hostname = hostname
        self.log_format = log_format
        self.extra_args = list(extra_args)
        self.proc = None
        self.runs = 0
        self.log_path = None
        self.addresses = []
        test.addCleanup(self._final_stop)
        if start:
            self.start()

    # Lifecycle

    def start(self):
        assert self.proc is None, "server already running"
        self.runs += 1
        self.log_path = os.path.join(self.root, f"server-{self.runs}.log")
        log = open(self.log_path, "wb")
        try:
            self.proc = subprocess.Popen(
                [binary(), "serve", "--config", self.config_path, "--log-format", self.log_format]
                + self.extra_args,
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log)
        finally:
            log.close()
        deadline = time.monotonic() + START_TIMEOUT
        started = None
        for _ in range(1000):
            started = next((e for e in self.logs() if e.get("event") == "started"), None)
            if started is not None or self.proc.poll() is not None or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        if started is None:
            rc = self.proc.poll()
            text = self.log_text()
            self.stop()
            raise AssertionError(f"server did not start (exit status {rc}); log:\n{text}")
        self.addresses = []
        for e in self.logs():
            if e.get("event") == "listening":
                self.addresses.append(split_address(e["address"]))
        if not self.addresses:
            raise AssertionError("server logged no listening address:\n" + self.log_text())
        return self

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    @property
    def port(self):
        """The port of the first IPv4 listening address."""
        return next(p for h, p in self.addresses if ":" not in h)

    @property
    def port6(self):
        return next(p for h, p in self.addresses if ":" in h)

    def signal(self, sig):
        self.proc.send_signal(sig)

    def wait(self, timeout):
        """Exit status, or None when still running after `timeout` seconds."""
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        self.proc = None
        return rc

    def stop(self, timeout=STOP_TIMEOUT):
        """SIGTERM, wait, SIGKILL. Returns the exit status (None when it was not running)."""
        if self.proc is None:
            return None
        p = self.proc
        rc = p.poll()
        if rc is None:
            try:
                p.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                rc = p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=timeout)
                rc = None
        self.proc = None
        return rc

    def _final_stop(self):
        """Cleanup: stops the server, and reports it when it had died on its own (a crash)."""
        if self.proc is None:
            return
        died = self.proc.poll()
        rc = self.stop()
        crashed = "*** Program crashed" in self.log_text() or "Fatal error" in self.log_text()
        if (died is not None and died < 0) or crashed:
            how = f"by signal {-died}" if died is not None and died < 0 else f"(exit status {rc})"
            raise AssertionError(f"server process crashed {how} during the test:\n{self.crash_excerpt()}")

    def crash_excerpt(self, lines=6):
        text = self.log_text().splitlines()
        for marker in ("Simultaneous accesses", "Fatal error", "Fatal", "Program crashed"):
            for i, line in enumerate(text):
                if marker in line:
                    # The crash line, then the backtrace the Swift runtime prints after it.
                    return "\n".join(text[i:i + 60])
        return "\n".join(text[-lines:])

    def kill9(self):
        """SIGKILL, as a crash."""
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=STOP_TIMEOUT)
        self.proc = None

    def restart(self):
        self.stop()
        return self.start()

    # Logs

    def log_text(self):
        if not self.log_path or not os.path.exists(self.log_path):
            return ""
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def logs(self, event=None):
        out = []
        for line in self.log_text().splitlines():
            e = parse_log_line(line, self.log_format)
            if e is not None and (event is None or e.get("event") == event):
                out.append(e)
        return out

    def wait_for_log(self, predicate, timeout=5.0, what="log line"):
        deadline = time.monotonic() + timeout
        for _ in range(int(timeout / 0.01) + 2):
            for e in self.logs():
                if predicate(e):
                    return e
            if time.monotonic() > deadline:
                break
            time.sleep(0.01)
        raise AssertionError(f"no {what} within {timeout}s; log:\n{self.log_text()}")

    # Memory

    def rss_kib(self):
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise AssertionError("no VmRSS for the server process")

    # Spool

    def queue_list(self):
        """Envelopes as the CLI lists them (`queue list --json`)."""
        r = run_cli(["queue", "list", "--json", "--spool", self.spool])
        if r.returncode != 0:
            raise AssertionError(f"queue list failed ({r.returncode}): {r.stderr.decode(errors='replace')}")
        return json.loads(r.stdout.decode("utf-8"))

    def queue_files(self):
        """{name: (envelope dict, message bytes)} read straight from SPOOL/queue."""
        return read_queue_dir(os.path.join(self.spool, "queue"))

    def dir_entries(self, sub):
        path = os.path.join(self.spool, sub)
        return sorted(os.listdir(path)) if os.path.isdir(path) else []

    # Clients

    def connect(self, source=None, family=socket.AF_INET, timeout=IO_TIMEOUT, greet=True):
        want_v6 = family == socket.AF_INET6
        host, port = next((h, p) for h, p in self.addresses if (":" in h) == want_v6)
        c = SMTPConn(self.test, host, port, source=source, timeout=timeout)
        if greet:
            r = c.reply()
            self.test.assertEqual(r.code, 220, f"greeting: {r}")
        return c


def split_address(text):
    if text.startswith("["):
        host, _, port = text[1:].partition("]:")
        return host, int(port)
    host, _, port = text.rpartition(":")
    return host, int(port)


QUEUE_MAGIC = b"RELAYGATE-QUEUE 1"


def parse_queue_file(data):
    """(envelope, message) of one queue file; raises AssertionError when malformed."""
    first, sep, rest = data.partition(b"\n")
    if first != QUEUE_MAGIC or not sep:
        raise AssertionError(f"bad magic line {first[:40]!r}")
    env_line, sep, message = rest.partition(b"\n")
    if not sep:
        raise AssertionError("no end of envelope line")
    env = json.loads(env_line.decode("utf-8"))
    if not isinstance(env, dict):
        raise AssertionError("envelope is not an object")
    return env, message


def read_queue_dir(path):
    out = {}
    for name in sorted(os.listdir(path)):
        with open(os.path.join(path, name), "rb") as f:
            out[name] = parse_queue_file(f.read())
    return out


def has_bare_cr_or_lf(data):
    """True when `data` holds a CR not followed by LF or an LF not preceded by CR."""
    return re.search(rb"\r(?!\n)|(?<!\r)\n", data) is not None


def split_received(message):
    """(first Received header with its folded lines, the rest) of stored message bytes."""
    if not message.startswith(b"Received:"):
        raise AssertionError(f"message does not start with Received: {message[:60]!r}")
    pos = 0
    for _ in range(100):
        end = message.index(b"\r\n", pos) + 2
        pos = end
        if pos >= len(message) or message[pos:pos + 1] not in (b" ", b"\t"):
            break
    return message[:pos], message[pos:]


# MARK: SMTP over a raw socket

class Reply:
    def __init__(self, lines):
        self.lines = lines
        self.code = int(lines[0][:3])
        text = lines[0][4:]
        m = re.match(r"([245]\.\d{1,3}\.\d{1,3})(?: |$)", text)
        self.status = m.group(1) if m else None
        self.text = "\n".join(l[4:] for l in lines)

    def __repr__(self):
        return "Reply(" + " | ".join(self.lines) + ")"

    @property
    def head(self):
        """`code status`, e.g. '250 2.1.0'; the code alone when there is no enhanced status."""
        return f"{self.code} {self.status}" if self.status else str(self.code)


class ConnectionClosed(AssertionError):
    pass


class ReplyTimeout(AssertionError):
    pass


class SMTPConn:
    """A client on a raw socket: sends exact bytes, reads replies, sees the close."""

    def __init__(self, test, host, port, source=None, timeout=IO_TIMEOUT):
        self.test = test
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        test.addCleanup(self.close)
        self.sock.settimeout(timeout)
        if source:
            self.sock.bind((source, 0))
        self.sock.connect((host, port))
        self.timeout = timeout
        self.buf = b""
        self.eof = False

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, data):
        if isinstance(data, str):
            data = data.encode("utf-8")
        self.sock.sendall(data)

    def _fill(self, deadline):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ReplyTimeout(f"nothing from the server in time (have {self.buf[:200]!r})")
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            raise ReplyTimeout(f"nothing from the server in time (have {self.buf[:200]!r})") from None
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            self.eof = True
        self.buf += chunk

    def reply(self, timeout=None):
        """The next complete reply (all its lines)."""
        deadline = time.monotonic() + (timeout or self.timeout)
        lines = []
        for _ in range(100000):
            while b"\r\n" in self.buf:
                raw, self.buf = self.buf.split(b"\r\n", 1)
                line = raw.decode("utf-8", "replace")
                lines.append(line)
                if len(line) < 3 or not line[:3].isdigit():
                    raise AssertionError(f"not a reply line: {line!r}")
                if len(line) == 3 or line[3] == " ":
                    return Reply(lines)
            if self.eof:
                raise ConnectionClosed(f"connection closed while waiting for a reply (partial {lines!r}, "
                                       f"rest {self.buf!r})")
            self._fill(deadline)
        raise AssertionError("reply loop bound reached")

    def replies(self, n, timeout=None):
        return [self.reply(timeout) for _ in range(n)]

    def command(self, line, timeout=None):
        self.send(line + "\r\n" if isinstance(line, str) else line + b"\r\n")
        return self.reply(timeout)

    def all_replies_until_eof(self, timeout=None, limit=1000):
        """Every reply up to the server's close."""
        out = []
        for _ in range(limit):
            try:
                out.append(self.reply(timeout))
            except ConnectionClosed:
                return out
        raise AssertionError("too many replies")

    def expect_eof(self, timeout=None):
        """Asserts the server closes the connection (with nothing more to say)."""
        deadline = time.monotonic() + (timeout or self.timeout)
        for _ in range(10000):
            if self.eof:
                self.test.assertEqual(self.buf, b"", "unexpected bytes before close")
                return
            if self.buf:
                raise AssertionError(f"expected close, got {self.buf!r}")
            try:
                self._fill(deadline)
            except ReplyTimeout:
                raise AssertionError("connection still open")
        raise AssertionError("eof loop bound reached")

    def silent_for(self, seconds):
        """True when nothing arrives (and no close) within `seconds`."""
        if self.buf or self.eof:
            return False
        self.sock.settimeout(seconds)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            return True
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            self.eof = True
        self.buf += chunk
        return False

    def ehlo(self, name="client.test"):
        r = self.command(f"EHLO {name}")
        self.test.assertEqual(r.code, 250, f"EHLO: {r}")
        return r

    def send_message(self, sender, recipients, data, mail_params="", ehlo=True):
        """A whole transaction; `data` is already dot-stuffed and ends with CRLF.CRLF. Returns the final reply."""
        if ehlo:
            self.ehlo()
        r = self.command(f"MAIL FROM:<{sender}>{(' ' + mail_params) if mail_params else ''}")
        self.test.assertEqual(r.head, "250 2.1.0", f"MAIL: {r}")
        for rc in recipients:
            r = self.command(f"RCPT TO:<{rc}>")
            self.test.assertEqual(r.head, "250 2.1.5", f"RCPT: {r}")
        r = self.command("DATA")
        self.test.assertEqual(r.code, 354, f"DATA: {r}")
        self.send(data)
        return self.reply()


QUEUED = re.compile(r"^2\.0\.0 OK queued as ([0-9a-z]{16})$")


def queued_id(reply):
    """The queue id of a `250 2.0.0 OK queued as ID` reply; AssertionError otherwise."""
    m = QUEUED.match(reply.lines[0][4:]) if reply.code == 250 else None
    if not m:
        raise AssertionError(f"not a queued reply: {reply}")
    return m.group(1)


def dot_stuff(body):
    """`body` (CRLF lines, ending in CRLF) as sent after DATA, with the end marker."""
    assert body.endswith(b"\r\n")
    lines = body[:-2].split(b"\r\n")
    stuffed = [b"." + l if l.startswith(b".") else l for l in lines]
    return b"\r\n".join(stuffed) + b"\r\n.\r\n"


# MARK: tmpfs

def mount_tmpfs(test, path, size="256k"):
    """A tiny tmpfs at `path`, unmounted when the test ends (before its directory is removed)."""
    os.makedirs(path, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=20)
    if r.returncode != 0:
        raise AssertionError(f"mount tmpfs failed: {r.stderr.decode(errors='replace')}")

    def unmount():
        deadline = time.monotonic() + 10
        for _ in range(50):
            if time.monotonic() > deadline:
                break
            u = subprocess.run(["umount", path], stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=20)
            if u.returncode == 0:
                return
            time.sleep(0.1)
        subprocess.run(["umount", "-l", path], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=20)

    test.addCleanup(unmount)


def fill_disk(path, chunk=4096, limit=100000):
    """Writes `path` until the file system is full; returns the octets written."""
    data = b"\0" * chunk
    written = 0
    deadline = time.monotonic() + 20
    with open(path, "wb", buffering=0) as f:
        for _ in range(limit):
            if time.monotonic() > deadline:
                raise AssertionError("filling the file system took too long")
            try:
                n = f.write(data)
            except OSError as e:
                if e.errno == errno.ENOSPC:
                    break
                raise
            written += n
        else:
            raise AssertionError("file system never filled up")
        # Use up any partial page too.
        for _ in range(chunk):
            try:
                f.write(b"\0")
            except OSError as e:
                if e.errno == errno.ENOSPC:
                    break
                raise
            written += 1
    return written
