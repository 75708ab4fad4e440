"""Relay policy end to end: the example policies served for real, an open-relay battery, SIGHUP
reloads, the rule names in the mail log, `relaygate explain`, `relaygate test` and `relaygate check`.

Every server runs the real binary on loopback addresses only. The example policies are copied and
their networks moved onto 127.0.0.0/8 so that trusted and untrusted clients can be played from
127.0.0.X source addresses; their rules and structure (and so their line numbers) are kept.
"""

import json
import os
import re
import signal
import smtplib
import subprocess
import sys
import time
import unittest

# Importable both by discovery (-s Tests/Integration) and by file path.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Server, SMTPConn, run_cli, require_tool, workdir

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
POLICIES = os.path.join(REPO, "policies")

DIAGNOSTIC = re.compile(r"^(?P<file>.+?):(?P<line>\d+):(?P<col>\d+): (?P<message>.+)$")
# swaks marks lines sent and read inside TLS with ~ where plaintext has -.
QUEUED = re.compile(r"<[-~]  250 2\.0\.0 OK queued as ([0-9a-z]{16})")
SWAKS_RCPT = re.compile(r"[-~]> RCPT TO:<[^\n]*>\n\s*<(?:-|~|\*\*|~\*)\s+(\d{3})(?: ([245]\.\d{1,3}\.\d{1,3}))?")


# MARK: Helpers

class PolicyServer(Server):
    """`relaygate serve` on a configuration file written by the test (not the harness's own)."""

    def __init__(self, test, config_path, spool, listen=(), log_format="text", start=True):
        self.test = test
        self.root = os.path.dirname(config_path)
        self.spool = spool
        self.config_path = config_path
        self.hostname = None
        self.log_format = log_format
        self.extra_args = []
        for item in listen:
            self.extra_args += ["--listen", item]
        self.proc = None
        self.runs = 0
        self.log_path = None
        self.addresses = []
        test.addCleanup(self._final_stop)
        if start:
            self.start()

    def listener_port(self, name, family6=False):
        """The port a named listener got (from its `event=listening` line)."""
        for e in self.logs("listening"):
            if e.get("listener") == name and (e["address"].startswith("[") == family6):
                return int(e["address"].rpartition(":")[2])
        raise AssertionError(f"listener {name} logged no {'IPv6' if family6 else 'IPv4'} address:\n"
                             + self.log_text())

    def wait_sessions_done(self, count, timeout=5.0):
        """Waits until `count` sessions have logged their disconnect."""
        self.wait_for_log(lambda e: len(self.logs("disconnect")) >= count, timeout=timeout,
                          what=f"{count} disconnect lines")

    def session_events(self, session):
        return [e for e in self.logs() if e.get("session") == session]


def swaks(port, recipient, source, sender="sender@origin.test", server="127.0.0.1", extra=()):
    """One message by swaks from `source`; (exit status, output, RCPT code, RCPT status, queue id)."""
    args = [require_tool("swaks"), "--server", server, "--port", str(port), "--from", sender,
            "--to", recipient, "--helo", "swaks.client.test", "--timeout", "10",
            "--local-interface", source, "--header", "Subject: policy test"] + list(extra)
    r = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
    out = r.stdout.decode("utf-8", "replace")
    m = SWAKS_RCPT.search(out)
    if m is None:
        raise AssertionError(f"no RCPT reply in the swaks output:\n{out}")
    ids = QUEUED.findall(out)
    return r.returncode, out, int(m.group(1)), m.group(2), (ids[0] if ids else None)


def write(path, text):
    with open(path, "w") as f:
        f.write(text)
    return path


def line_of(text, fragment, start=1):
    """The 1-based number of the first line at or after `start` holding `fragment`."""
    for n, line in enumerate(text.splitlines(), 1):
        if n >= start and fragment in line:
            return n
    raise AssertionError(f"{fragment!r} not in the configuration text")


def copy_policy(test, name, replacements):
    """policies/NAME.conf copied into a fresh folder with its spool there, paths written relative to
    policies/ made absolute, and `replacements`
    (old, new) applied; every replacement must change the text. Returns (path, spool, text)."""
    d = workdir(test)
    spool = os.path.join(d, "spool")
    with open(os.path.join(POLICIES, name + ".conf")) as f:
        original = f.read()
    # The tests check what is accepted and queued; nothing is delivered anywhere.
    hold = "" if "delivery no" in original else "; outbound { delivery no }"
    text, n = re.subn(r"(?m)^spool .*$", f"spool {spool}{hold}", original)
    test.assertEqual(n, 1, f"{name}.conf has no single spool line")
    # Paths relative to policies/ (the development certificates, deploy/pam.d) stay where they point.
    text = text.replace('"../', f'"{REPO}/')
    for old, new in replacements:
        test.assertIn(old, text, f"{name}.conf no longer holds {old!r}")
        text = text.replace(old, new)
    test.assertNotEqual(text, original)
    test.assertNotIn("/var/spool", text)
    test.assertEqual(len(text.splitlines()), len(original.splitlines()), "the rewrite moved lines")
    path = write(os.path.join(d, name + ".conf"), text)
    return path, spool, text


def smtp_rcpt(host, port, source, recipient, sender="sender@origin.test"):
    """MAIL and RCPT with smtplib from `source`; the RCPT reply (code, text). No DATA."""
    with smtplib.SMTP(host, port, local_hostname="py.client.test", timeout=10,
                      source_address=(source, 0)) as c:
        c.ehlo()
        code, text = c.mail(sender)
        if code != 250:
            raise AssertionError(f"MAIL FROM:<{sender}>: {code} {text!r}")
        code, text = c.rcpt(recipient)
        c.rset()
    return code, text.decode("utf-8", "replace")


def explain_json(config, client, rcpts, listener=None, sender=None):
    args = ["explain", "--config", config, "--client", client, "--json"]
    if listener:
        args += ["--listener", listener]
    if sender:
        args += ["--from", sender]
    for r in rcpts:
        args += ["--rcpt", r]
    r = run_cli(args)
    if r.returncode != 0:
        raise AssertionError(f"explain exited {r.returncode}: {(r.stdout + r.stderr).decode(errors='replace')}")
    return json.loads(r.stdout.decode("utf-8"))


def verdict_of(code):
    return {2: "relay", 4: "defer", 5: "refuse"}[code // 100]


# MARK: 1. The example policies, served

class ExamplePolicyTests(unittest.TestCase):
    def drive(self, server, config, sends, options=None):
        """Sends one message per (listener, source, recipient, code, status, rule line) with swaks,
        checks each reply and the rule its log line names, then checks the queue holds exactly the
        accepted messages. Returns the queue ids."""
        accepted = {}
        for i, (listener, source, rcpt, code, status, line) in enumerate(sends):
            what = f"{rcpt} from {source} on {listener}"
            sender, extra = (options[i] if options else ("sender@origin.test", ()))
            rc, out, got_code, got_status, qid = swaks(server.listener_port(listener), rcpt, source, sender=sender,
                                                       extra=extra)
            self.assertEqual((got_code, got_status), (code, status), f"{what}:\n{out}")
            if code == 250:
                self.assertEqual(rc, 0, f"{what}:\n{out}")
                self.assertIsNotNone(qid, f"{what} was not queued:\n{out}")
                accepted[qid] = (source, rcpt)
            else:
                self.assertNotEqual(rc, 0, f"{what}:\n{out}")
                self.assertIsNone(qid, f"{what} was queued:\n{out}")
            server.wait_sessions_done(i + 1)
            connect = server.logs("connect")[i]
            self.assertEqual(connect["client"].rpartition(":")[0], source, server.log_text())
            self.assertEqual(connect["listener"], listener, server.log_text())
            events = server.session_events(connect["session"])
            decisions = [e for e in events if e["event"] in ("rcpt", "refuse")]
            self.assertEqual(len(decisions), 1, f"{what}: {decisions}")
            want_rule = line if isinstance(line, str) else f"{config}:{line}"
            self.assertEqual(decisions[0].get("rule"), want_rule, f"{what}: {decisions[0]}")
            if code == 250:
                self.assertEqual((decisions[0]["event"], decisions[0]["verdict"]), ("rcpt", "relay"))
            else:
                self.assertEqual((decisions[0]["event"], decisions[0]["code"]), ("refuse", str(code)))
        listed = server.queue_list()
        self.assertEqual(sorted(e["id"] for e in listed), sorted(accepted), listed)
        for e in listed:
            source, rcpt = accepted[e["id"]]
            self.assertEqual([r["address"] for r in e["recipients"]], [rcpt], e)
            self.assertEqual(e["client"]["address"], source, e)
        self.assertEqual(len(server.dir_entries("queue")), len(accepted))
        return sorted(accepted)

    def test_outbound_gateway(self):
        config, spool, text = copy_policy(self, "outbound-gateway", [
            ("192.0.2.0/24", "127.0.0.2/31"), ("198.51.100.10", "127.0.0.4"), ("198.51.100.11", "127.0.0.5")])
        office, apps = line_of(text, "relay from <office>"), line_of(text, "relay from <appservers>")
        final = line_of(text, "refuse", start=line_of(text, "rules {"))
        s = PolicyServer(self, config, spool, listen=["internal=127.0.0.1:0"])
        self.drive(s, config, [
            ("internal", "127.0.0.2", "bob@example.net", 250, "2.1.5", office),
            ("internal", "127.0.0.3", "bob@example.net", 250, "2.1.5", office),
            ("internal", "127.0.0.4", "carol@example.com", 250, "2.1.5", apps),
            ("internal", "127.0.0.5", "dave@example.net", 250, "2.1.5", apps),
            ("internal", "127.0.0.6", "bob@example.net", 550, "5.7.1", final),
            ("internal", "127.0.0.9", "bob@example.net", 550, "5.7.1", final),
            ("internal", "127.0.0.1", "bob@example.net", 550, "5.7.1", final),
            ("internal", "127.0.0.2", "postmaster@relay.example.org", 550, "5.1.1", "builtin:no-mailboxes"),
        ])

    def test_backup_mx(self):
        config, spool, text = copy_policy(self, "backup-mx", [])
        to, final = line_of(text, "relay to <backed-up>"), line_of(text, "refuse", start=line_of(text, "rules {"))
        s = PolicyServer(self, config, spool, listen=["mx=127.0.0.1:0"])
        self.drive(s, config, [
            ("mx", "127.0.0.9", "user@example.com", 250, "2.1.5", to),
            ("mx", "127.0.0.9", "user@sub.example.com", 250, "2.1.5", to),
            ("mx", "127.0.0.9", "user@example.net", 250, "2.1.5", to),
            ("mx", "127.0.0.9", "user@example.org", 550, "5.7.1", final),
            ("mx", "127.0.0.9", "user@xexample.com", 550, "5.7.1", final),
            ("mx", "127.0.0.9", "user@example.com.evil.test", 550, "5.7.1", final),
            ("mx", "127.0.0.9", "user@sub.example.net", 550, "5.7.1", final),
            ("mx", "127.0.0.9", "user%victim.test@example.com", 550, "5.7.1", "builtin:untrusted-routing"),
        ])

    def test_combined(self):
        config, spool, text = copy_policy(self, "combined", [
            ("192.0.2.0/24", "127.0.0.2/31"), ("203.0.113.0/24", "127.0.0.6/31")])
        rules = line_of(text, "rules {")
        office = line_of(text, "relay  listener mx from <office>")
        backup = line_of(text, "relay  listener mx to <backed-up>")
        deferral = line_of(text, "defer  listener submission authenticated")
        outsiders = line_of(text, "refuse from 127.0.0.6/31")
        final = line_of(text, "refuse", start=outsiders + 1)
        self.assertGreater(final, rules)
        s = PolicyServer(self, config, spool, listen=["mx=127.0.0.1:0", "submission=127.0.0.1:0"])
        self.assertNotEqual(s.listener_port("mx"), s.listener_port("submission"))
        self.drive(s, config, [
            ("mx", "127.0.0.2", "anyone@example.net", 250, "2.1.5", office),
            ("mx", "127.0.0.9", "user@example.com", 250, "2.1.5", backup),
            ("mx", "127.0.0.9", "user@sub.example.com", 250, "2.1.5", backup),
            ("mx", "127.0.0.7", "user@example.com", 250, "2.1.5", backup),
            ("mx", "127.0.0.9", "user@example.org", 550, "5.7.1", final),
            ("mx", "127.0.0.7", "anyone@example.net", 554, "5.7.1", outsiders),
            ("mx", "127.0.0.2", "someone@mail.example.org", 550, "5.1.1", "builtin:no-mailboxes"),
            ("mx", "127.0.0.2", "someone@gw.example.org", 550, "5.1.1", "builtin:no-mailboxes"),
            # Submission: nothing is authenticated on a plain session, so nothing relays there and
            # the deferral for authenticated clients without TLS is never reached.
            ("submission", "127.0.0.2", "anyone@example.net", 550, "5.7.1", final),
            ("submission", "127.0.0.9", "anyone@example.net", 550, "5.7.1", final),
            ("submission", "127.0.0.9", "user@example.com", 550, "5.7.1", final),
            ("submission", "127.0.0.7", "anyone@example.net", 554, "5.7.1", outsiders),
        ])
        self.assertFalse([e for e in s.logs() if e.get("rule") == f"{config}:{deferral}"], s.log_text())
        self.assertFalse([e for e in s.logs("refuse") if e.get("code", "").startswith("4")], s.log_text())

    def test_roaming_users(self):
        """The example as shipped, with real backends in place of the example's: its PAM service folder
        becomes a private pam_pwdfile service, its directory a private slapd with StartTLS, and the
        development certificates under var/certs serve TLS and sign the client certificate."""
        from backends import PamService, Slapd
        certs = os.path.join(REPO, "var", "certs")
        self.assertTrue(os.path.exists(os.path.join(certs, "client.pem")), "make test makes var/certs first")
        pam = PamService(self, users={"alice": "alice-pam"})
        ldap = Slapd(self, tls=(f"{certs}/server.pem", f"{certs}/server.key", f"{certs}/ca.pem"), require_tls=True)
        config, spool, text = copy_policy(self, "roaming-users", [
            (f'confdir "{REPO}/deploy/pam.d"', f'confdir "{pam.confdir}"'),
            ('uri "ldap://ldap1.example.org" "ldap://ldap2.example.org"', f'uri "ldap://127.0.0.1:9" "{ldap.uri}"'),
        ])
        rules = line_of(text, "rules {")
        final = line_of(text, "refuse", start=rules)
        by_auth = {l: line_of(text, f"relay listener {l} tls authenticated", start=rules)
                   for l in ("submission", "submissions")}
        by_ca = line_of(text, "relay tls certificate ca corp", start=rules)
        s = PolicyServer(self, config, spool, listen=["submission=127.0.0.1:0", "submissions=127.0.0.1:0"])
        tls = {"submission": ["--tls"], "submissions": ["--tlsc"]}
        sends, options = [], []
        for listener in ("submission", "submissions"):
            for source in ("127.0.0.1", "127.0.0.9"):
                # TLS without an identity: refused by the final rule.
                sends.append((listener, source, "x@example.net", 550, "5.7.1", final))
                options.append(("sender@origin.test", tls[listener]))
                # alice through PAM, bob through the directory (after the first URI fails over).
                for user, password, sender in (("alice", "alice-pam", "alice.smith@example.org"),
                                               ("bob", "bob-secret", "bob@example.org")):
                    sends.append((listener, source, "x@example.net", 250, "2.1.5", by_auth[listener]))
                    options.append((sender, tls[listener] + ["--auth", "PLAIN", "--auth-user", user,
                                                             "--auth-password", password]))
                # A client certificate from the staff CA.
                sends.append((listener, source, "y@example.net", 250, "2.1.5", by_ca))
                options.append(("sender@origin.test", tls[listener] + ["--tls-cert", f"{certs}/client.pem",
                                                                        "--tls-key", f"{certs}/client.key"]))
        self.assertEqual(len(self.drive(s, config, sends, options)), 12)
        # Plaintext on the STARTTLS port: MAIL gets 530 5.7.0 and nothing is queued.
        c = SMTPConn(self, "127.0.0.1", s.listener_port("submission"))
        c.reply()
        c.ehlo()
        r = c.command("MAIL FROM:<alice@example.org>")
        self.assertEqual((r.code, r.status), (530, "5.7.0"))
        self.assertEqual(len(s.queue_list()), 12)

    def test_embedded_default(self):
        config, spool, text = copy_policy(self, "embedded-default", [])
        loopback = line_of(text, "relay from <loopback>")
        final = line_of(text, "refuse", start=loopback + 1)
        s = PolicyServer(self, config, spool, listen=["default=127.0.0.1:0", "default=[::1]:0"])
        ids = self.drive(s, config, [
            ("default", "127.0.0.1", "anyone@example.net", 250, "2.1.5", loopback),
            ("default", "127.0.0.9", "anyone@example.net", 550, "5.7.1", final),
            ("default", "127.0.0.2", "anyone@example.net", 550, "5.7.1", final),
        ])
        # ::1 is in <loopback> too (swaks needs an extra Perl module for IPv6: smtplib instead).
        with smtplib.SMTP("::1", s.listener_port("default", family6=True), local_hostname="py.client.test",
                          timeout=10) as c:
            c.ehlo()
            self.assertEqual(c.mail("a@origin.test")[0], 250)
            self.assertEqual(c.rcpt("v6@example.net")[0], 250)
            code, reply = c.data(b"Subject: over IPv6\r\n\r\nhello\r\n")
        self.assertEqual(code, 250, reply)
        listed = s.queue_list()
        self.assertEqual(len(listed), len(ids) + 1)
        v6 = [e for e in listed if e["id"] not in ids]
        self.assertEqual(v6[0]["client"]["address"], "::1")
        self.assertEqual([r["address"] for r in v6[0]["recipients"]], ["v6@example.net"])


# MARK: 2. Open-relay battery

# (RCPT argument, MAIL FROM, expected code or None for any 5xx, expected enhanced status or None)
BATTERY = [
    ("user%victim.test@example.com", "probe@relay-test.test", 550, "5.7.1"),
    ("victim.test!user@example.com", "probe@relay-test.test", 550, "5.7.1"),
    ('"user@victim.test"@example.com', "probe@relay-test.test", 550, "5.7.1"),
    ('"user%victim.test"@example.com', "probe@relay-test.test", 550, "5.7.1"),
    ("@example.com:user@victim.test", "probe@relay-test.test", 550, "5.7.1"),
    ("user@victim.test.", "probe@relay-test.test", 550, "5.7.1"),
    ("user@[192.0.2.25]", "probe@relay-test.test", 550, "5.7.1"),
    ("user@[127.0.0.1]", "probe@relay-test.test", 550, "5.1.1"),
    ("USER@VICTIM.TEST", "probe@relay-test.test", 550, "5.7.1"),
    ("user@victim.test@example.com", "probe@relay-test.test", 501, None),
    ("user@example.com@victim.test", "probe@relay-test.test", None, None),
    ("victim@victim.test", "ceo@example.com", 550, "5.7.1"),
    ("victim@victim.test", "ceo@example.org", 550, "5.7.1"),
    ("victim@victim.test", "postmaster@example.com", 550, "5.7.1"),
    ("postmaster@victim.test", "probe@relay-test.test", 550, "5.7.1"),
    ("Postmaster", "probe@relay-test.test", 550, "5.1.1"),
]


class OpenRelayBatteryTests(unittest.TestCase):
    def battery(self, server, source="127.0.0.9"):
        """Every form from `source`, one session each; returns the replies by form."""
        out = {}
        for rcpt, sender, code, status in BATTERY:
            what = f"RCPT TO:<{rcpt}> after MAIL FROM:<{sender}> from {source}"
            c = server.connect(source=source)
            c.ehlo()
            r = c.command(f"MAIL FROM:<{sender}>")
            self.assertEqual(r.head, "250 2.1.0", f"{what}: MAIL {r}")
            r = c.command(f"RCPT TO:<{rcpt}>")
            self.assertEqual(r.code // 100, 5, f"{what}: relayed or deferred: {r}")
            if code is not None:
                self.assertEqual(r.code, code, f"{what}: {r}")
            if status is not None:
                self.assertEqual(r.status, status, f"{what}: {r}")
            # DATA without an accepted recipient must not start a message.
            d = c.command("DATA")
            self.assertNotEqual(d.code, 354, f"{what}: DATA after a refused recipient: {d}")
            self.assertEqual(c.command("QUIT").code, 221)
            c.close()
            out[(rcpt, sender)] = r
        return out

    def assert_nothing_queued(self, server):
        self.assertEqual(server.queue_list(), [])
        self.assertEqual(server.dir_entries("queue"), [])

    def test_backup_mx_relays_nothing_it_should_not(self):
        config, spool, text = copy_policy(self, "backup-mx", [])
        final = line_of(text, "refuse", start=line_of(text, "rules {"))
        s = PolicyServer(self, config, spool, listen=["mx=127.0.0.1:0"])
        replies = self.battery(s)
        self.assert_nothing_queued(s)
        refusals = [e for e in s.logs("refuse") if e.get("stage") == "rcpt"]
        self.assertEqual(len(refusals), len(BATTERY), s.log_text())
        rules = [e.get("rule") for e in refusals]
        self.assertEqual(len([r for r in rules if r == "builtin:untrusted-routing"]), 4, s.log_text())
        # The source route is judged on its final address, user@victim.test: not backed up.
        route_session = s.logs("connect")[[k[0] for k in replies].index("@example.com:user@victim.test")]
        route = [e for e in refusals if e["session"] == route_session["session"]]
        self.assertEqual([e.get("rule") for e in route], [f"{config}:{final}"], s.log_text())
        # Positive control: the battery's server does relay for a backed-up domain.
        c = s.connect(source="127.0.0.9")
        r = c.send_message("probe@relay-test.test", ["user@example.com"],
                           b"Subject: control\r\n\r\nbacked up\r\n.\r\n")
        self.assertEqual(r.code, 250, r)
        listed = s.queue_list()
        self.assertEqual(len(listed), 1)
        self.assertEqual([x["address"] for x in listed[0]["recipients"]], ["user@example.com"])

    def test_outbound_gateway_relays_nothing_for_outsiders(self):
        config, spool, text = copy_policy(self, "outbound-gateway", [
            ("192.0.2.0/24", "127.0.0.2/31"), ("198.51.100.10", "127.0.0.4"), ("198.51.100.11", "127.0.0.5")])
        s = PolicyServer(self, config, spool, listen=["internal=127.0.0.1:0"])
        self.battery(s)
        self.assert_nothing_queued(s)
        self.assertFalse(s.logs("rcpt"), s.log_text())
        # Positive control: an office client relays through the same server.
        c = s.connect(source="127.0.0.2")
        r = c.send_message("alice@example.org", ["bob@victim.test"], b"Subject: control\r\n\r\nout\r\n.\r\n")
        self.assertEqual(r.code, 250, r)
        self.assertEqual(len(s.queue_list()), 1)


# MARK: 3. SIGHUP

class ReloadTests(unittest.TestCase):
    TEMPLATE = """\
hostname relay.test
spool {spool}
outbound {{ delivery no }}
listener default {{ address 127.0.0.1:0 }}
limits {{
    command-timeout 10s
    shutdown-timeout 2s
}}
networks trusted {{ {trusted} }}
rules {{
    relay from <trusted>
    refuse
}}
"""

    def reloads(self, s):
        return [e for e in s.logs("reload")]

    def hup_and_wait(self, s, status, timeout=5.0):
        before = len(self.reloads(s))
        s.signal(signal.SIGHUP)
        deadline = time.monotonic() + timeout
        for _ in range(int(timeout / 0.02) + 2):
            got = self.reloads(s)
            if len(got) > before:
                self.assertEqual(got[before].get("status"), status, s.log_text())
                return got[before]
            if time.monotonic() > deadline:
                break
            time.sleep(0.02)
        raise AssertionError(f"no event=reload line within {timeout}s:\n{s.log_text()}")

    def rcpt(self, conn, recipient="bob@destination.test"):
        r = conn.command("MAIL FROM:<alice@origin.test>")
        self.assertEqual(r.head, "250 2.1.0", r)
        r = conn.command(f"RCPT TO:<{recipient}>")
        conn.command("RSET")
        return r

    def new_session_rcpt(self, s, source):
        c = s.connect(source=source)
        c.ehlo()
        r = self.rcpt(c)
        c.command("QUIT")
        c.close()
        return r

    def test_sighup_applies_to_new_sessions_and_refuses_an_invalid_config(self):
        d = workdir(self)
        spool = os.path.join(d, "spool")
        config = os.path.join(d, "relay.conf")
        write(config, self.TEMPLATE.format(spool=spool, trusted="127.0.0.9"))
        s = PolicyServer(self, config, spool)

        a = s.connect(source="127.0.0.1")
        a.ehlo()
        self.assertEqual(self.rcpt(a).head, "550 5.7.1")
        b = s.connect(source="127.0.0.9")
        b.ehlo()

        second = self.TEMPLATE.format(spool=spool, trusted="127.0.0.1")
        write(config, second)
        ok = self.hup_and_wait(s, "ok")
        self.assertEqual(ok.get("rules"), "2", ok)

        self.assertEqual(self.new_session_rcpt(s, "127.0.0.1").head, "250 2.1.5")
        self.assertEqual(self.new_session_rcpt(s, "127.0.0.9").head, "550 5.7.1")
        # Sessions connected before the reload keep the rules they started with.
        self.assertEqual(self.rcpt(a).head, "550 5.7.1")
        r = b.send_message("alice@origin.test", ["kept@destination.test"],
                           b"Subject: old rules\r\n\r\nstill trusted\r\n.\r\n", ehlo=False)
        self.assertEqual(r.code, 250, r)

        broken = [
            # An unknown keyword.
            (second.replace("hostname relay.test", "hostname relay.test\nhostnme relay.test"),
             "hostnme relay.test", 1),
            # A rules block whose last rule relays.
            (second.replace("networks trusted", "networks x { 127.0.0.9 }\nnetworks trusted")
                    .replace("    refuse\n", "    relay from <x>\n"),
             "relay from <x>", 5),
        ]
        for text, bad_line_text, col in broken:
            write(config, text)
            bad_line = line_of(text, bad_line_text)
            errors_before = len([e for e in s.logs("config") if e.get("level") == "error"])
            refused = self.hup_and_wait(s, "refused")
            self.assertEqual(refused.get("level"), "warning", refused)
            errors = [e for e in s.logs("config") if e.get("level") == "error"][errors_before:]
            self.assertTrue(errors, s.log_text())
            locations = [e.get("location", "") for e in errors]
            self.assertIn(f"{config}:{bad_line}:{col}", locations, s.log_text())
            for e in errors:
                self.assertRegex(e.get("location", ""), r"^.+:\d+:\d+$", e)
                self.assertTrue(e.get("message"), e)
            self.assertIsNone(s.proc.poll(), "server exited after a refused reload")
            # The second configuration still applies.
            self.assertEqual(self.new_session_rcpt(s, "127.0.0.1").head, "250 2.1.5")
            self.assertEqual(self.new_session_rcpt(s, "127.0.0.9").head, "550 5.7.1")

        b.command("QUIT")
        a.command("QUIT")
        listed = s.queue_list()
        self.assertEqual([[x["address"] for x in e["recipients"]] for e in listed], [["kept@destination.test"]])
        self.assertEqual(listed[0]["client"]["address"], "127.0.0.9")
        self.assertIsNone(s.proc.poll())


# MARK: 4 and 5. Rule names in the mail log; relaygate explain

POLICY = """\
hostname relay.test
spool {spool}
outbound {{ delivery no }}
listener default {{ address 127.0.0.1:0 }}
limits {{
    command-timeout 10s
    shutdown-timeout 2s
}}

networks trusted file "trusted.txt"
domains backup {{ backup.test .backup.test }}

rules {{
    relay from <trusted>
    refuse from 127.0.0.9 reply 554 5.7.1 "Go away"
    defer from 127.0.0.8 reply 451 4.7.1 "Try again later"
    relay to <backup>
    refuse
}}
"""

TRUSTED = """\
# Clients that may relay anywhere.
127.0.0.2      # one host
127.0.0.4/31
"""


class PolicyFixture:
    def make_policy(self):
        d = workdir(self)
        self.spool = os.path.join(d, "spool")
        self.config = os.path.join(d, "relay.conf")
        self.text = POLICY.format(spool=self.spool)
        write(self.config, self.text)
        write(os.path.join(d, "trusted.txt"), TRUSTED)
        self.rule_lines = {
            "trusted": line_of(self.text, "relay from <trusted>"),
            "go-away": line_of(self.text, "refuse from 127.0.0.9"),
            "later": line_of(self.text, "defer from 127.0.0.8"),
            "backup": line_of(self.text, "relay to <backup>"),
            "final": line_of(self.text, "refuse", start=line_of(self.text, "relay to <backup>") + 1),
        }
        return self.config


class LogRuleTests(unittest.TestCase, PolicyFixture):
    def session_of(self, s, index):
        s.wait_sessions_done(index + 1)
        return s.logs("connect")[index]["session"]

    def test_log_lines_name_the_rule(self):
        config = self.make_policy()
        s = PolicyServer(self, config, self.spool)
        lines = self.rule_lines
        cases = [
            # (source, recipient, event, rule, code)
            ("127.0.0.2", "bob@destination.test", "rcpt", f"{config}:{lines['trusted']}", None),
            ("127.0.0.5", "bob@destination.test", "rcpt", f"{config}:{lines['trusted']}", None),
            ("127.0.0.3", "user@sub.backup.test", "rcpt", f"{config}:{lines['backup']}", None),
            ("127.0.0.3", "bob@destination.test", "refuse", f"{config}:{lines['final']}", "550"),
            ("127.0.0.9", "bob@destination.test", "refuse", f"{config}:{lines['go-away']}", "554"),
            ("127.0.0.8", "bob@destination.test", "refuse", f"{config}:{lines['later']}", "451"),
            ("127.0.0.2", "Postmaster", "refuse", "builtin:no-mailboxes", "550"),
            ("127.0.0.2", "x@[127.0.0.1]", "refuse", "builtin:no-mailboxes", "550"),
            ("127.0.0.3", "user%elsewhere.test@backup.test", "refuse", "builtin:untrusted-routing", "550"),
        ]
        for i, (source, rcpt, event, rule, code) in enumerate(cases):
            c = s.connect(source=source)
            c.ehlo()
            self.assertEqual(c.command("MAIL FROM:<alice@origin.test>").code, 250)
            r = c.command(f"RCPT TO:<{rcpt}>")
            self.assertEqual(r.code, 250 if code is None else int(code), f"{rcpt} from {source}: {r}")
            c.command("QUIT")
            c.close()
            session = self.session_of(s, i)
            got = [e for e in s.session_events(session) if e["event"] in ("rcpt", "refuse")]
            self.assertEqual(len(got), 1, got)
            e = got[0]
            self.assertEqual(e["event"], event, e)
            self.assertEqual(e.get("rule"), rule, e)
            if event == "rcpt":
                self.assertEqual(e.get("verdict"), "relay", e)
                self.assertEqual(e.get("to"), f"<{rcpt}>", e)
            else:
                self.assertEqual(e.get("stage"), "rcpt", e)
                self.assertEqual(e.get("code"), code, e)
                self.assertTrue(e.get("reason"), e)
        self.assertEqual(s.queue_list(), [])


class ExplainTests(unittest.TestCase, PolicyFixture):
    def test_text_output_lists_every_rule_up_to_the_match(self):
        config = self.make_policy()
        r = run_cli(["explain", "--config", config, "--client", "127.0.0.3", "--rcpt", "bob@destination.test"])
        out = r.stdout.decode("utf-8", "replace")
        self.assertEqual(r.returncode, 0, out + r.stderr.decode(errors="replace"))
        self.assertIn("<bob@destination.test>: refuse (550 5.7.1 Relaying denied)", out)
        lines = out.splitlines()
        order = ["trusted", "go-away", "later", "backup"]
        for name in order:
            loc = f"{config}:{self.rule_lines[name]}"
            idx = next((i for i, l in enumerate(lines) if re.match(rf"^\s+no\s+{re.escape(loc)}\s+\S", l)), None)
            self.assertIsNotNone(idx, f"no 'no' line for {loc}:\n{out}")
            self.assertTrue(idx + 1 < len(lines) and lines[idx + 1].strip()
                            and not re.match(r"^\s+(no|match)\s", lines[idx + 1]),
                            f"no reason under the rule at {loc}:\n{out}")
        indices = [next(i for i, l in enumerate(lines) if f"{config}:{self.rule_lines[n]} " in l) for n in order]
        self.assertEqual(indices, sorted(indices), out)
        self.assertIn("client 127.0.0.3 is not in <trusted>", out)
        self.assertIn("recipient domain destination.test is not in <backup>", out)
        final = f"{config}:{self.rule_lines['final']}"
        match = [l for l in lines if re.match(r"^\s+match\s", l)]
        self.assertEqual(len(match), 1, out)
        self.assertRegex(match[0], rf"^\s+match\s+{re.escape(final)}\s+refuse$")
        self.assertGreater(lines.index(match[0]), max(indices))

    def test_json_output(self):
        config = self.make_policy()
        obj = explain_json(config, "127.0.0.3", ["bob@destination.test", "user@backup.test", "Postmaster"])
        self.assertEqual(obj["session"]["client"], "127.0.0.3")
        self.assertEqual(obj["session"]["listener"], "default")
        rs = obj["recipients"]
        self.assertEqual([x["recipient"] for x in rs], ["<bob@destination.test>", "<user@backup.test>", "<Postmaster>"])
        refused, relayed, pm = rs
        self.assertEqual((refused["verdict"], refused["code"], refused["status"]), ("refuse", 550, "5.7.1"))
        self.assertEqual(refused["rule"], f"{config}:{self.rule_lines['final']}")
        self.assertEqual(refused["ruleText"], "refuse")
        self.assertEqual(refused["reply"], "Relaying denied")
        self.assertTrue(refused["reason"])
        trace = refused["trace"]
        self.assertEqual([t["location"] for t in trace],
                         [f"{config}:{self.rule_lines[n]}" for n in ("trusted", "go-away", "later", "backup", "final")])
        self.assertEqual([t["matched"] for t in trace], [False, False, False, False, True])
        self.assertEqual(trace[0]["rule"], "relay from <trusted>")
        for t in trace[:-1]:
            self.assertTrue(t.get("why"), t)
        self.assertEqual((relayed["verdict"], relayed["code"], relayed["status"]), ("relay", 250, "2.1.5"))
        self.assertEqual(relayed["rule"], f"{config}:{self.rule_lines['backup']}")
        self.assertEqual(relayed["ruleText"], "relay to <backup>")
        self.assertEqual(relayed["trace"][-1], {"location": f"{config}:{self.rule_lines['backup']}",
                                               "rule": "relay to <backup>", "matched": True})
        self.assertEqual((pm["verdict"], pm["code"], pm["status"], pm["rule"]),
                         ("refuse", 550, "5.1.1", "builtin:no-mailboxes"))
        deferred = explain_json(config, "127.0.0.8", ["bob@destination.test"])["recipients"][0]
        self.assertEqual((deferred["verdict"], deferred["code"], deferred["status"], deferred["rule"]),
                         ("defer", 451, "4.7.1", f"{config}:{self.rule_lines['later']}"))

    def test_explain_agrees_with_the_live_server(self):
        config = self.make_policy()
        s = PolicyServer(self, config, self.spool)
        rcpts = ["bob@destination.test", "user@backup.test", "user@sub.backup.test", "user@xbackup.test",
                 "user%x.test@backup.test", "Postmaster", "user@[127.0.0.1]", "user@[192.0.2.25]",
                 "USER@BACKUP.TEST"]
        clients = ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.6", "127.0.0.8", "127.0.0.9"]
        seen = set()
        for client in clients:
            explained = explain_json(config, client, rcpts)["recipients"]
            self.assertEqual(len(explained), len(rcpts))
            for rcpt, x in zip(rcpts, explained):
                code, text = smtp_rcpt("127.0.0.1", s.port, client, rcpt)
                what = f"{rcpt} from {client}: server {code} {text!r}, explain {x}"
                self.assertEqual(x["code"], code, what)
                self.assertEqual(x["verdict"], verdict_of(code), what)
                self.assertTrue(text.startswith(x["status"] + " "), what)
                seen.add(x["verdict"])
        self.assertEqual(seen, {"relay", "refuse", "defer"})
        self.assertEqual(s.queue_list(), [])

    def test_explain_agrees_with_the_live_server_on_an_example_policy(self):
        config, spool, text = copy_policy(self, "combined", [
            ("192.0.2.0/24", "127.0.0.2/31"), ("203.0.113.0/24", "127.0.0.6/31")])
        s = PolicyServer(self, config, spool, listen=["mx=127.0.0.1:0", "submission=127.0.0.1:0"])
        rcpts = ["anyone@example.net", "user@example.com", "user@sub.example.com", "user%x.test@example.com",
                 "someone@mail.example.org", "Postmaster"]
        for listener in ("mx", "submission"):
            for client in ("127.0.0.2", "127.0.0.7", "127.0.0.9"):
                explained = explain_json(config, client, rcpts, listener=listener)["recipients"]
                for rcpt, x in zip(rcpts, explained):
                    code, reply = smtp_rcpt("127.0.0.1", s.listener_port(listener), client, rcpt)
                    what = f"{rcpt} from {client} on {listener}: server {code} {reply!r}, explain {x}"
                    self.assertEqual((x["verdict"], x["code"]), (verdict_of(code), code), what)
        self.assertEqual(s.queue_list(), [])


# MARK: 6. relaygate test

class PolicyCaseTests(unittest.TestCase):
    def test_every_example_case_file_passes(self):
        cases = sorted(f for f in os.listdir(POLICIES) if f.endswith(".cases"))
        self.assertGreaterEqual(len(cases), 5, cases)
        for name in cases:
            conf = os.path.join(POLICIES, name[:-len(".cases")] + ".conf")
            path = os.path.join(POLICIES, name)
            r = run_cli(["test", "--config", conf, path])
            out = (r.stdout + r.stderr).decode("utf-8", "replace")
            self.assertEqual(r.returncode, 0, f"{name}:\n{out}")
            self.assertNotIn("FAIL", out)
            with open(path) as f:
                n = len([l for l in f if l.startswith("case ")])
            self.assertRegex(out, rf"(?m)^{re.escape(path)}: {n} passed, 0 failed$")

    def test_a_wrong_expectation_fails_with_its_explanation(self):
        d = workdir(self)
        conf = os.path.join(POLICIES, "outbound-gateway.conf")
        path = write(os.path.join(d, "wrong.cases"), """\
# One right, two wrong.
case client 192.0.2.10 rcpt bob@example.net expect relay
case client 203.0.113.9 rcpt bob@example.net expect relay
case "wrong rule" {
    client 192.0.2.10
    rcpt bob@example.net
    expect relay rule 32
}
""")
        r = run_cli(["test", "--config", conf, path])
        out = (r.stdout + r.stderr).decode("utf-8", "replace")
        self.assertEqual(r.returncode, 1, out)
        fails = [l for l in out.splitlines() if l.startswith("FAIL ")]
        self.assertEqual(len(fails), 2, out)
        self.assertRegex(fails[0], rf"^FAIL {re.escape(path)}:3:\d+: ")
        self.assertRegex(fails[1], rf"^FAIL {re.escape(path)}:4:\d+: ")
        self.assertIn("expected relay, got refuse", fails[0])
        self.assertIn("client 203.0.113.9 is not in <office>", out)
        self.assertRegex(out, r"(?m)^\s+match\s+\S*outbound-gateway\.conf:33\s+refuse$")
        self.assertRegex(out, r"(?m)^\s+match\s+\S*outbound-gateway\.conf:31\s+relay from <office>$")
        self.assertRegex(out, rf"(?m)^{re.escape(path)}: 1 passed, 2 failed$")

    def test_a_syntax_error_names_file_line_and_column(self):
        d = workdir(self)
        conf = os.path.join(POLICIES, "backup-mx.conf")
        path = write(os.path.join(d, "broken.cases"), """\
case client 203.0.113.5 rcpt user@example.com expect relay
case client 203.0.113.5 rcpt user@example.com expekt relay
""")
        r = run_cli(["test", "--config", conf, path])
        out = (r.stdout + r.stderr).decode("utf-8", "replace")
        self.assertNotEqual(r.returncode, 0, out)
        diags = [m for m in map(DIAGNOSTIC.match, out.splitlines()) if m]
        self.assertTrue(any(m["file"] == path and m["line"] == "2" for m in diags), out)
        self.assertNotIn("passed", out)


# MARK: 7. relaygate check

class RuleCheckTests(unittest.TestCase):
    HEAD = """\
hostname relay.test
spool /var/tmp/relaygate-check-spool
listener default { address 127.0.0.1:0 }
networks office { 127.0.0.2 }
domains dl { example.com }
rules {
"""

    def check(self, rules):
        d = workdir(self)
        text = self.HEAD + "".join(f"    {r}\n" for r in rules) + "}\n"
        path = write(os.path.join(d, "c.conf"), text)
        r = run_cli(["check", "--config", path])
        out = (r.stdout + r.stderr).decode("utf-8", "replace")
        diags = [m.groupdict() for m in map(DIAGNOSTIC.match, out.splitlines()) if m]
        return r.returncode, out, diags, path, text

    def assert_refused(self, rules, bad, col, fragment):
        rc, out, diags, path, text = self.check(rules)
        self.assertEqual(rc, 1, out)
        line = str(line_of(text, bad, start=line_of(text, "rules {")))
        found = [d for d in diags if d["file"] == path and d["line"] == line and d["col"] == str(col)
                 and not d["message"].startswith("warning:")]
        self.assertTrue(found, f"no error at {path}:{line}:{col}:\n{out}")
        self.assertIn(fragment, " ".join(d["message"] for d in found), out)

    def test_rules_ending_in_a_relay(self):
        self.assert_refused(["relay from <office>"], "relay from <office>", 5, "last rule")

    def test_unconditional_relay(self):
        self.assert_refused(["relay", "refuse"], "relay", 5, "open relay")

    def test_relay_on_tls_only(self):
        self.assert_refused(["relay tls", "refuse"], "relay tls", 5, "open relay")

    def test_unknown_list(self):
        self.assert_refused(["relay from <nope>", "refuse"], "<nope>", 16, "<nope>")

    def test_domains_list_used_as_networks(self):
        self.assert_refused(["relay from <dl>", "refuse"], "<dl>", 16, "domains list")

    def test_sender_only_rule_warns(self):
        rc, out, diags, path, text = self.check(["relay sender example.org", "refuse"])
        self.assertEqual(rc, 0, out)
        line = str(line_of(text, "relay sender example.org"))
        warnings = [d for d in diags if d["message"].startswith("warning:")]
        self.assertTrue([d for d in warnings if d["file"] == path and d["line"] == line], out)
        self.assertFalse([d for d in diags if not d["message"].startswith("warning:")], out)

    def test_the_valid_policy_passes(self):
        rc, out, diags, path, text = self.check(["relay from <office>", "relay to <dl>", "refuse"])
        self.assertEqual(rc, 0, out)
        self.assertEqual(diags, [], out)


if __name__ == "__main__":
    unittest.main()
