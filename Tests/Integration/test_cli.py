"""The command line: check and its diagnostics, the embedded default, version, help, usage errors,
SIGTERM and JSON logs."""

import json
import os
import re
import signal
import time
import unittest

from harness import Server, config_text, run_cli, workdir

DIAGNOSTIC = re.compile(r"^(?P<file>.+?):(?P<line>\d+):(?P<col>\d+): (?P<message>.+)$")


class CheckTests(unittest.TestCase):
    def write(self, name, text):
        path = os.path.join(self.dir, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def setUp(self):
        self.dir = workdir(self)

    def diagnostics(self, r):
        """The error diagnostics (`file:line:col: message`); warnings (`...: warning: ...`) are left out."""
        out = (r.stdout + r.stderr).decode("utf-8", "replace").splitlines()
        found = [m.groupdict() for m in map(DIAGNOSTIC.match, out) if m]
        return [d for d in found if not d["message"].startswith("warning:")]

    def test_valid_config_exits_0(self):
        path = self.write("good.conf", """\
# A complete configuration.
hostname relay.test
spool /var/tmp/relaygate-spool
listener default {
    address 127.0.0.1:0
    address [::1]:0
}
listener other {
    address 127.0.0.2:2526
}
limits {
    message-size 10k          # sizes: 25M, 512k, or octets
    recipients 3
    errors 10
    command-line 512
    text-line 1000
    sessions 1000
    sessions-per-client 2
    command-timeout 1s
    data-timeout 1s
    received-headers 30
    shutdown-timeout 2s
}
smtp {
    greeting-delay 300ms
    normalize-bare-lf 127.0.0.1/32
}
queue {
    writers 8
}
""")
        r = run_cli(["check", "--config", path])
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(self.diagnostics(r), [])

    def test_test_configs_are_valid(self):
        path = self.write("harness.conf", config_text("/tmp/spool", ("127.0.0.1:0", "[::1]:0"),
                                                      {"recipients": "3"}, {"greeting-delay": "300ms"}))
        r = run_cli(["check", "--config", path])
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    # (name, text, line, col, message fragment)
    BROKEN = [
        ("unknown directive", "hostname relay.test\nhostnme relay.test\n", 2, 1,
         "did you mean 'hostname'?"),
        ("unknown setting in block", "limits {\n    recipients 3\n    mesage-size 10k\n}\n", 3, 5,
         "did you mean 'message-size'?"),
        ("unknown top-level listner", "listner default {\n    address 127.0.0.1:25\n}\n", 1, 1,
         "did you mean 'listener'?"),
        ("address without port", "listener default {\n    address 127.0.0.1\n}\n", 2, 13, "127.0.0.1"),
        ("address out of range", "listener default {\n    address 300.1.2.3:25\n}\n", 2, 13, "300.1.2.3:25"),
        ("address with bad port", "listener default {\n  address [::1]:99999\n}\n", 2, 11, "[::1]:99999"),
        ("bad size", "limits {\n    message-size 10q\n}\n", 2, 18, "10q"),
        ("bad duration", "limits {\n    command-timeout 5x\n}\n", 2, 21, "5x"),
        ("bad greeting delay", "smtp {\n    greeting-delay soon\n}\n", 2, 20, "soon"),
        ("bad network", "smtp {\n    normalize-bare-lf 127.0.0.1/33\n}\n", 2, 23, "127.0.0.1/33"),
        ("number out of range", "limits {\n    recipients 0\n}\n", 2, 16, "recipients"),
        ("unclosed block", "hostname relay.test\nlimits {\n    recipients 3\n", 2, 8, "never closed"),
        ("duplicate setting", "limits {\n    recipients 3\n    recipients 4\n}\n", 3, 5, "twice"),
        ("duplicate directive", "hostname a.test\nhostname b.test\n", 2, 1, "twice"),
        ("include of a missing file", "hostname relay.test\ninclude \"missing.conf\"\n", 2, 9, "missing.conf"),
    ]

    def test_broken_configs(self):
        for name, text, line, col, fragment in self.BROKEN:
            with self.subTest(name):
                path = self.write(re.sub(r"\W+", "-", name) + ".conf", text)
                r = run_cli(["check", "--config", path])
                self.assertEqual(r.returncode, 1, (r.stdout + r.stderr).decode())
                diags = self.diagnostics(r)
                self.assertTrue(diags, f"no file:line:col diagnostic: {(r.stdout + r.stderr).decode()}")
                d = diags[0]
                self.assertEqual(d["file"], path, d)
                self.assertEqual((int(d["line"]), int(d["col"])), (line, col), d)
                self.assertIn(fragment, d["message"], d)

    def test_every_problem_is_reported(self):
        path = self.write("many.conf", "hostnme relay.test\nlimits {\n    message-size big\n    recipents 3\n}\n"
                                       "smtp {\n    greeting-delay 1y\n}\n")
        r = run_cli(["check", "--config", path])
        self.assertEqual(r.returncode, 1)
        got = [(int(d["line"]), int(d["col"])) for d in self.diagnostics(r) if d["file"] == path]
        self.assertEqual(got, [(1, 1), (3, 18), (4, 5), (7, 20)], (r.stdout + r.stderr).decode())

    def test_problem_in_included_file_names_that_file(self):
        inc = self.write("part.conf", "# part\nlimits {\n    recipients many\n}\n")
        path = self.write("main.conf", "hostname relay.test\ninclude \"part.conf\"\n")
        r = run_cli(["check", "--config", path])
        self.assertEqual(r.returncode, 1)
        diags = self.diagnostics(r)
        self.assertTrue(diags, (r.stdout + r.stderr).decode())
        self.assertTrue(diags[0]["file"].endswith("part.conf"), diags)
        self.assertEqual(os.path.realpath(diags[0]["file"]), os.path.realpath(inc))
        self.assertEqual((int(diags[0]["line"]), int(diags[0]["col"])), (3, 16))

    def test_included_file_is_used(self):
        self.write("part.conf", "limits {\n    recipients 3\n}\n")
        path = self.write("main.conf", "hostname relay.test\ninclude \"part.conf\"\n")
        r = run_cli(["check", "--config", path])
        self.assertEqual(r.returncode, 0, (r.stdout + r.stderr).decode())

    def test_missing_config_file(self):
        r = run_cli(["check", "--config", os.path.join(self.dir, "absent.conf")])
        self.assertEqual(r.returncode, 1)
        self.assertTrue(self.diagnostics(r))

    def test_print_default_is_valid(self):
        r = run_cli(["check", "--print-default"])
        self.assertEqual(r.returncode, 0)
        self.assertIn(b"listener", r.stdout)
        path = self.write("default.conf", r.stdout.decode())
        c = run_cli(["check", "--config", path])
        self.assertEqual(c.returncode, 0, (c.stdout + c.stderr).decode())
        self.assertEqual(self.diagnostics(c), [])


class CommandLineTests(unittest.TestCase):
    def test_version(self):
        r = run_cli(["--version"])
        self.assertEqual(r.returncode, 0)
        self.assertEqual(r.stdout, b"relaygate 0.1.0\n")

    def test_help_serve(self):
        r = run_cli(["help", "serve"])
        self.assertEqual(r.returncode, 0)
        out = r.stdout.decode()
        self.assertIn("relaygate serve", out)
        for opt in ("--config", "--listen", "--spool", "--log-format"):
            self.assertIn(opt, out)

    def test_help_overview(self):
        r = run_cli(["help"])
        self.assertEqual(r.returncode, 0)
        for cmd in ("serve", "check", "queue"):
            self.assertIn(cmd, r.stdout.decode())

    def assert_usage_error(self, args):
        r = run_cli(args)
        self.assertEqual(r.returncode, 2, f"{args}: {r}")
        lines = r.stderr.decode().splitlines()
        self.assertEqual(len(lines), 1, f"{args}: {lines}")
        self.assertTrue(lines[0].strip())
        self.assertEqual(r.stdout, b"")

    def test_unknown_command(self):
        self.assert_usage_error(["frobnicate"])

    def test_unknown_option(self):
        self.assert_usage_error(["serve", "--frobnicate"])
        self.assert_usage_error(["check", "--frobnicate"])
        self.assert_usage_error(["--frobnicate"])

    def test_no_command(self):
        self.assert_usage_error([])

    def test_check_without_config(self):
        self.assert_usage_error(["check"])

    def test_bad_listen_and_log_format(self):
        self.assert_usage_error(["serve", "--listen", "nowhere"])
        self.assert_usage_error(["serve", "--listen", "127.0.0.1:0", "--log-format", "xml"])


class ServeTests(unittest.TestCase):
    def test_sigterm_exits_0_and_idle_session_gets_421(self):
        s = Server(self, limits={"shutdown-timeout": "2s"})
        c = s.connect()
        c.ehlo()
        self.assertEqual(c.command("NOOP").head, "250 2.0.0")
        t0 = time.monotonic()
        s.signal(signal.SIGTERM)
        r = c.reply(timeout=5)
        self.assertEqual(r.head, "421 4.3.2", r)
        c.expect_eof()
        rc = s.wait(timeout=8)
        self.assertEqual(rc, 0, f"exit status {rc}; log:\n{s.log_text()}")
        self.assertLess(time.monotonic() - t0, 8)
        self.assertTrue(s.logs("shutdown"))

    def test_sigterm_lets_transaction_finish(self):
        s = Server(self, limits={"shutdown-timeout": "2s"})
        c = s.connect()
        c.ehlo()
        c.send(b"MAIL FROM:<a@origin.test>\r\nRCPT TO:<b@destination.test>\r\nDATA\r\n")
        self.assertEqual([r.head for r in c.replies(3)], ["250 2.1.0", "250 2.1.5", "354"])
        c.send(b"Subject: shutdown\r\n\r\n")
        s.signal(signal.SIGTERM)
        time.sleep(0.2)
        c.send(b"last words\r\n.\r\n")
        r = c.reply(timeout=5)
        self.assertEqual(r.code, 250, r)
        rc = s.wait(timeout=8)
        self.assertEqual(rc, 0)
        self.assertEqual(len(s.queue_list()), 1)

    def test_session_idle_after_its_transaction_gets_421_promptly(self):
        # Once its transaction is done the session is idle, so it is told 421 at once rather than
        # being held until the shutdown timeout.
        s = Server(self, limits={"shutdown-timeout": "4s"})
        c = s.connect()
        c.ehlo()
        c.send(b"MAIL FROM:<a@origin.test>\r\nRCPT TO:<b@destination.test>\r\nDATA\r\n")
        self.assertEqual([r.head for r in c.replies(3)], ["250 2.1.0", "250 2.1.5", "354"])
        s.signal(signal.SIGTERM)
        s.wait_for_log(lambda e: e.get("event") == "shutdown", what="shutdown begin")
        c.send(b"Subject: shutdown\r\n\r\nlast words\r\n.\r\n")
        self.assertEqual(c.reply(timeout=5).code, 250)
        t0 = time.monotonic()
        r = c.reply(timeout=5)
        waited = time.monotonic() - t0
        self.assertEqual(r.head, "421 4.3.2", r)
        self.assertLess(waited, 1.5, f"421 came {waited:.1f}s after the transaction ended (shutdown-timeout 4s)")
        c.expect_eof()
        self.assertEqual(s.wait(timeout=8), 0)

    def test_sigterm_with_stalled_data_session_exits_0(self):
        s = Server(self, limits={"shutdown-timeout": "1s"})
        c = s.connect()
        c.ehlo()
        c.send(b"MAIL FROM:<a@origin.test>\r\nRCPT TO:<b@destination.test>\r\nDATA\r\n")
        self.assertEqual([r.head for r in c.replies(3)], ["250 2.1.0", "250 2.1.5", "354"])
        c.send(b"Subject: never finished\r\n\r\n")
        t0 = time.monotonic()
        s.signal(signal.SIGTERM)
        rc = s.wait(timeout=8)
        self.assertEqual(rc, 0)
        self.assertLess(time.monotonic() - t0, 5)
        replies = c.all_replies_until_eof(timeout=3)
        self.assertEqual([r.head for r in replies], ["421 4.3.2"])
        self.assertEqual(s.queue_list(), [])

    def test_json_log_format(self):
        s = Server(self, log_format="json")
        c = s.connect()
        c.ehlo()
        c.send_message("a@origin.test", ["b@destination.test"], b"Subject: json\r\n\r\nhi\r\n.\r\n", ehlo=False)
        c.command("QUIT")
        c.expect_eof()
        s.wait_for_log(lambda e: e.get("event") == "disconnect", what="disconnect")
        pid = s.pid
        port = s.port
        self.assertEqual(s.stop(), 0)
        lines = [l for l in s.log_text().splitlines() if l.strip()]
        events = []
        for line in lines:
            obj = json.loads(line)   # every line is one JSON object
            self.assertIsInstance(obj, dict, line)
            self.assertIn("event", obj, line)
            self.assertIn("ts", obj, line)
            events.append(obj)
        names = [e["event"] for e in events]
        for name in ("recovered", "listening", "started", "connect", "ehlo", "rcpt", "accepted", "disconnect",
                     "shutdown"):
            self.assertIn(name, names)
        session_events = [e for e in events if e["event"] in ("connect", "ehlo", "rcpt", "accepted", "disconnect")]
        sessions = {e.get("session") for e in session_events}
        self.assertEqual(len(sessions), 1, session_events)
        self.assertTrue(next(iter(sessions)))
        started = next(e for e in events if e["event"] == "started")
        self.assertEqual(int(started["pid"]), pid)
        listening = [e for e in events if e["event"] == "listening"]
        self.assertEqual([e["address"] for e in listening], [f"127.0.0.1:{port}"])

    def test_started_line_names_pid(self):
        s = Server(self)
        (started,) = s.logs("started")
        self.assertEqual(int(started["pid"]), s.pid)
        listening = s.logs("listening")
        self.assertEqual([(e["listener"], e["address"]) for e in listening], [("default", f"127.0.0.1:{s.port}")])

    def test_listen_and_spool_options_override_config(self):
        root = workdir(self)
        other = os.path.join(root, "other-spool")
        # The configured port 1 is never bound: --listen replaces it, and --spool the spool.
        s = Server(self, root=root, listeners=("127.0.0.1:1",), extra_args=["--listen", "127.0.0.2:0", "--spool", other])
        self.assertEqual([h for h, _ in s.addresses], ["127.0.0.2"])
        (rec,) = s.logs("recovered")
        self.assertEqual(rec["spool"], other)
        self.assertTrue(os.path.isdir(os.path.join(other, "queue")))
        c = s.connect(greet=False)
        self.assertEqual(c.reply().code, 220)


if __name__ == "__main__":
    unittest.main()
