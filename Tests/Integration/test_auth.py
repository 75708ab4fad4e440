"""SMTP AUTH end to end: the real binary against a private slapd, PAM service folders (pam_pwdfile and
pam_unix with a throwaway system user), and real clients (smtplib, swaks, msmtp).

What must hold: the right password relays and the wrong one, an unknown user and an empty password
get the same 535 after the same delay; a backend that is down gets 454, never 535; filter
metacharacters in a user name find nothing they should not; a user sends only as the addresses
mapped to them; failures past the limit cool the client off with 421; no password reaches the log.
"""

import base64
import os
import smtplib
import socket
import ssl
import subprocess
import time
import unittest

from backends import PamService, Slapd, ThrowawayUser
from harness import SMTPConn, make_certs, require_tool, run_cli, workdir
from test_policies import PolicyServer

FAILURE_DELAY = 0.4




def plain(user, password, authz=""):
    return base64.b64encode(f"{authz}\0{user}\0{password}".encode()).decode()


class AuthServer:
    """A relaygate whose `sub` listener (STARTTLS) and `subs` listener (implicit TLS) offer AUTH
    through the given backends, and relay only for authenticated users."""

    def __init__(self, test, backends_text, listener_auth, certs=None, auth_settings="", listener_extra="",
                 senders=None, extra=""):
        self.test = test
        self.certs = certs or make_certs(test)
        d = workdir(test)
        self.spool = os.path.join(d, "spool")
        senders_text = ""
        auth_block = f"failure-delay {int(FAILURE_DELAY * 1000)}ms\n{auth_settings}"
        if senders:
            senders_text = "senders people {\n" + "".join(f"    {u} {' '.join(a)}\n" for u, a in senders.items()) + "}\n"
            auth_block += "\nsenders people"
        self.config = os.path.join(d, "relaygate.conf")
        with open(self.config, "w") as f:
            f.write(f"""hostname relay.test
spool {self.spool}
outbound {{ delivery no }}
limits {{ command-timeout 10s; data-timeout 10s; shutdown-timeout 2s }}
tls {{ certificate "{self.certs}/server.pem" "{self.certs}/server.key" }}
{backends_text}
auth {{
{auth_block}
}}
{senders_text}
listener sub {{
    address 127.0.0.1:0
    auth {listener_auth}
    {listener_extra}
}}
listener subs {{
    address 127.0.0.1:0
    tls implicit
    auth {listener_auth}
}}
{extra}
rules {{
    relay authenticated
    refuse
}}
""")
        self.server = PolicyServer(test, self.config, self.spool)
        self.port = self.server.listener_port("sub")
        self.implicit_port = self.server.listener_port("subs")
        self.context = ssl.create_default_context(cafile=os.path.join(self.certs, "ca.pem"))

    def tls_conn(self):
        """A raw SMTP connection after EHLO, STARTTLS and a second EHLO."""
        c = SMTPConn(self.test, "127.0.0.1", self.port)
        self.test.assertEqual(c.reply().code, 220)
        c.ehlo()
        self.test.assertEqual(c.command("STARTTLS").code, 220)
        c.sock = self.context.wrap_socket(c.sock, server_hostname="localhost")
        c.buf = b""
        r = c.command("EHLO client.test")
        self.test.assertEqual(r.code, 250)
        return c, r

    def auth(self, user, password):
        """(code, enhanced text, seconds) of AUTH PLAIN with an initial response."""
        c, _ = self.tls_conn()
        t = time.monotonic()
        r = c.command("AUTH PLAIN " + plain(user, password))
        took = time.monotonic() - t
        c.close()
        return r.code, r.text, took

    def smtplib(self):
        s = smtplib.SMTP("127.0.0.1", self.port, timeout=10)
        self.test.addCleanup(s.close)
        s.starttls(context=self.context)
        return s

    def logs(self, event=None):
        return self.server.logs(event)

    def log_text(self):
        return self.server.log_text()


def ldap_backend(ldap, secret, extra=""):
    return f"""ldap directory {{
    uri "{ldap.uri}"
    bind-dn "{ldap.service_dn}"
    bind-password-file "{secret}"
    base "{ldap.base}"
    filter "(&(objectClass=inetOrgPerson)(uid=%u))"
    timeout 2s
    {extra}
}}"""


def pam_backend(name, pam):
    return f'pam {name} {{ service {pam.service}; confdir "{pam.confdir}" }}'


class LDAPAuthTests(unittest.TestCase):
    def setUp(self):
        self.ldap = Slapd(self, debug="stats")
        self.secret = os.path.join(workdir(self), "ldap.secret")
        self.ldap.write_secret(self.secret)

    def server(self, **kw):
        return AuthServer(self, ldap_backend(self.ldap, self.secret, kw.pop("ldap_extra", "")), "directory", **kw)

    def test_good_wrong_unknown_and_empty_password(self):
        s = self.server()
        code, text, _ = s.auth("alice", "alice-secret")
        self.assertEqual((code, text[:5]), (235, "2.7.0"))
        wrong = s.auth("alice", "not-her-password")
        unknown = s.auth("nobody-here", "alice-secret")
        empty = s.auth("eve", "")
        for r in (wrong, unknown, empty):
            self.assertEqual((r[0], r[1]), (535, "5.7.8 Authentication credentials invalid"), r)
            self.assertGreaterEqual(r[2], FAILURE_DELAY - 0.02, r)
            self.assertLess(r[2], FAILURE_DELAY + 0.5, r)
        # Same answer, same time: a wrong password and an unknown user cannot be told apart.
        self.assertLess(abs(wrong[2] - unknown[2]), 0.15)
        # The empty password never reached the directory as a bind.
        self.assertNotIn(f'BIND dn="{self.ldap.user_dn("eve")}"', self.ldap.log_text())
        results = [e["result"] for e in s.logs("auth")]
        self.assertEqual(results, ["ok", "failed", "failed", "failed"])
        reasons = [e.get("reason", "") for e in s.logs("auth")]
        self.assertIn("empty password", reasons[3])

    def test_filter_metacharacters_find_nothing_they_should_not(self):
        s = self.server(auth_settings="client-failure-limit 100\nuser-failure-limit 100")
        # A uid that holds filter metacharacters authenticates as itself ...
        self.assertEqual(s.auth("star*(paren", "weird-secret")[0], 235)
        # ... and injection attempts with a real password match no entry.
        for user in ("*", "alice*", ")(uid=*", "alice)(uid=*", "*)(|(uid=*", "al\\2aice"):
            self.assertEqual(s.auth(user, "alice-secret")[0], 535, user)
        self.assertIn("(uid=\\\\2A))", s.log_text())

    def test_sender_binding_uses_the_entry_mail_values(self):
        s = self.server()
        c, _ = s.tls_conn()
        self.assertEqual(c.command("AUTH PLAIN " + plain("alice", "alice-secret")).code, 235)
        self.assertEqual(c.command("MAIL FROM:<bob@example.org>").status, "5.7.1")
        self.assertEqual(c.command("MAIL FROM:<Alice.Smith@EXAMPLE.org>").code, 250)
        self.assertEqual(c.command("RCPT TO:<friend@elsewhere.test>").code, 250)
        c.command("RSET")
        self.assertEqual(c.command("MAIL FROM:<>").code, 250)
        c.close()
        # carol has no mail attribute: she may send bounces only.
        c, _ = s.tls_conn()
        self.assertEqual(c.command("AUTH PLAIN " + plain("carol", "carol-secret")).code, 235)
        r = c.command("MAIL FROM:<carol@example.org>")
        self.assertEqual((r.code, r.status), (553, "5.7.1"))
        self.assertEqual(c.command("MAIL FROM:<>").code, 250)
        c.close()

    def test_searches_reuse_a_connection_and_user_binds_do_not(self):
        s = self.server()
        before = len(self.ldap.log_text())
        for _ in range(4):
            self.assertEqual(s.auth("alice", "alice-secret")[0], 235)
        log = self.ldap.log_text()[before:]
        # One service connection for the four searches, one connection for each password check.
        self.assertEqual(log.count(" ACCEPT from IP="), 1 + 4, log)
        self.assertEqual(log.count(f'BIND dn="{self.ldap.service_dn}" method=128'), 1, log)
        self.assertEqual(log.count(f'BIND dn="{self.ldap.user_dn("alice")}" method=128'), 4, log)

    def test_directory_down_is_temporary_and_recovers(self):
        s = self.server()
        self.assertEqual(s.auth("alice", "alice-secret")[0], 235)
        self.ldap.stop()
        code, text, _ = s.auth("alice", "alice-secret")
        self.assertEqual((code, text[:5]), (454, "4.7.0"))
        self.assertEqual(s.auth("alice", "wrong")[0], 454)
        self.ldap.start()
        self.assertEqual(s.auth("alice", "alice-secret")[0], 235)
        self.assertIn("unavailable", [e["result"] for e in s.logs("auth")])

    def test_hung_directory_times_out_with_454(self):
        s = self.server()
        self.ldap.freeze()
        try:
            t = time.monotonic()
            code, _, _ = s.auth("bob", "bob-secret")
            self.assertEqual(code, 454)
            self.assertLess(time.monotonic() - t, 8.0)
        finally:
            self.ldap.thaw()

    def test_service_bind_failure_is_temporary(self):
        with open(self.secret, "w") as f:
            f.write("not-the-service-password")
        s = self.server()
        self.assertEqual(s.auth("alice", "alice-secret")[0], 454)

    def test_dn_template_without_search(self):
        s = AuthServer(self, f"""ldap directory {{
    uri "{self.ldap.uri}"
    dn-template "uid=%u,{self.ldap.base}"
}}""", "directory")
        self.assertEqual(s.auth("alice", "alice-secret")[0], 235)
        self.assertEqual(s.auth("alice", "wrong")[0], 535)
        self.assertEqual(s.auth("nobody", "x")[0], 535)
        # The mail values are read as the user: alice may send as her second address.
        c, _ = s.tls_conn()
        c.command("AUTH PLAIN " + plain("alice", "alice-secret"))
        self.assertEqual(c.command("MAIL FROM:<alice.smith@example.org>").code, 250)
        c.close()


class LDAPStartTLSTests(unittest.TestCase):
    def test_starttls_to_the_directory_with_its_ca(self):
        certs = make_certs(self)
        ldap = Slapd(self, tls=(f"{certs}/server.pem", f"{certs}/server.key", f"{certs}/ca.pem"), require_tls=True)
        secret = os.path.join(workdir(self), "secret")
        ldap.write_secret(secret)
        s = AuthServer(self, ldap_backend(ldap, secret, f'starttls yes\n    ca-file "{certs}/ca.pem"'), "directory",
                       certs=certs)
        self.assertEqual(s.auth("alice", "alice-secret")[0], 235)
        self.assertEqual(s.auth("alice", "wrong")[0], 535)

    def test_ldaps_with_its_ca(self):
        certs = make_certs(self)
        ldap = Slapd(self, tls=(f"{certs}/server.pem", f"{certs}/server.key", f"{certs}/ca.pem"))
        s = AuthServer(self, f"""ldap directory {{
    uri "{ldap.ldaps_uri}"
    ca-file "{certs}/ca.pem"
    dn-template "uid=%u,{ldap.base}"
}}""", "directory", certs=certs)
        self.assertEqual(s.auth("bob", "bob-secret")[0], 235)
        self.assertEqual(s.auth("bob", "wrong")[0], 535)

    def test_starttls_with_the_wrong_ca_is_unavailable(self):
        certs = make_certs(self)
        ldap = Slapd(self, tls=(f"{certs}/server.pem", f"{certs}/server.key", f"{certs}/ca.pem"), require_tls=True)
        secret = os.path.join(workdir(self), "secret")
        ldap.write_secret(secret)
        s = AuthServer(self, ldap_backend(ldap, secret, f'starttls yes\n    ca-file "{certs}/other-ca.pem"'),
                       "directory", certs=certs)
        self.assertEqual(s.auth("alice", "alice-secret")[0], 454)


class PAMAuthTests(unittest.TestCase):
    def test_pwdfile_service(self):
        pam = PamService(self)
        s = AuthServer(self, pam_backend("staff", pam), "staff")
        self.assertEqual(s.auth("alice", "alice-secret")[0], 235)
        self.assertEqual(s.auth("star*(paren", "weird-secret")[0], 235)
        wrong, unknown = s.auth("alice", "bad"), s.auth("mallory", "bad")
        self.assertEqual((wrong[0], unknown[0]), (535, 535))
        self.assertLess(abs(wrong[2] - unknown[2]), 0.15)
        pam.make_unavailable()
        self.assertEqual(s.auth("alice", "alice-secret")[0], 454)
        pam.make_available()
        self.assertEqual(s.auth("alice", "alice-secret")[0], 235)

    def test_pam_failure_delay_is_taken_over(self):
        # Without nodelay, pam_pwdfile would sleep about 2 s in pam_authenticate; PAM_FAIL_DELAY hands
        # the delay to the gateway, which answers after its own failure-delay on a timer.
        pam = PamService(self, nodelay=False)
        s = AuthServer(self, pam_backend("staff", pam), "staff")
        code, _, took = s.auth("alice", "wrong")
        self.assertEqual(code, 535)
        self.assertLess(took, FAILURE_DELAY + 0.8, "PAM's own delay was not taken over")

    def test_pam_unix_with_a_throwaway_system_user(self):
        user = ThrowawayUser(self)
        s = AuthServer(self, f'pam system {{ service {user.service}; confdir "{user.confdir}" }}', "system")
        self.assertEqual(s.auth(user.name, user.password)[0], 235)
        self.assertEqual(s.auth(user.name, user.password + "x")[0], 535)

    def test_backends_in_order_pam_then_ldap(self):
        pam = PamService(self, users={"alice": "pam-password"})
        ldap = Slapd(self)
        secret = os.path.join(workdir(self), "secret")
        ldap.write_secret(secret)
        s = AuthServer(self, pam_backend("staff", pam) + "\n" + ldap_backend(ldap, secret), "staff directory")
        self.assertEqual(s.auth("alice", "pam-password")[0], 235)
        self.assertEqual(s.auth("bob", "bob-secret")[0], 235)       # not in PAM, found in LDAP
        self.assertEqual(s.auth("alice", "alice-secret")[0], 235)   # PAM says no, LDAP says yes
        self.assertEqual(s.auth("alice", "neither")[0], 535)
        backends = [(e["result"], e.get("backend")) for e in s.logs("auth")]
        self.assertEqual(backends[:3], [("ok", "staff"), ("ok", "directory"), ("ok", "directory")])
        ldap.stop()
        self.assertEqual(s.auth("alice", "pam-password")[0], 235)   # the first backend still answers
        self.assertEqual(s.auth("bob", "bob-secret")[0], 454)       # PAM says no, LDAP cannot say


class ProtocolTests(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.certs = make_certs(cls)

    def setUp(self):
        self.pam = PamService(self)
        self.s = AuthServer(self, pam_backend("staff", self.pam), "staff", certs=self.certs,
                            senders={"alice": ["alice@example.org"], "bob": ["@example.net"]})

    def test_auth_is_offered_only_over_tls(self):
        c = SMTPConn(self, "127.0.0.1", self.s.port)
        c.reply()
        ehlo = c.command("EHLO client.test")
        self.assertFalse(any(line.startswith("AUTH") for line in ehlo.text.splitlines()), ehlo.lines)
        r = c.command("AUTH PLAIN " + plain("alice", "alice-secret"))
        self.assertEqual((r.code, r.status), (538, "5.7.11"))
        c.close()
        c, ehlo = self.s.tls_conn()
        self.assertIn("AUTH PLAIN LOGIN", ehlo.text.splitlines())
        c.close()

    def test_sasl_dialogs(self):
        c, _ = self.s.tls_conn()
        r = c.command("AUTH PLAIN")
        self.assertEqual(r.code, 334)
        self.assertEqual(c.command(plain("alice", "alice-secret")).code, 235)
        self.assertEqual(c.command("AUTH PLAIN " + plain("alice", "alice-secret")).code, 503)
        c.close()
        c, _ = self.s.tls_conn()
        r = c.command("AUTH LOGIN")
        self.assertEqual((r.code, base64.b64decode(r.text)), (334, b"Username:"))
        r = c.command(base64.b64encode(b"bob").decode())
        self.assertEqual((r.code, base64.b64decode(r.text)), (334, b"Password:"))
        self.assertEqual(c.command(base64.b64encode(b"bob-secret").decode()).code, 235)
        c.close()
        c, _ = self.s.tls_conn()
        self.assertEqual(c.command("AUTH LOGIN").code, 334)
        r = c.command("*")
        self.assertEqual((r.code, r.status), (501, "5.0.0"))
        r = c.command("AUTH PLAIN not@base64!")
        self.assertEqual((r.code, r.status), (501, "5.5.2"))
        r = c.command("AUTH CRAM-MD5")
        self.assertEqual((r.code, r.status), (504, "5.5.4"))
        self.assertEqual(c.command("MAIL FROM:<x@example.org>").code, 250)
        r = c.command("AUTH PLAIN " + plain("alice", "alice-secret"))
        self.assertEqual(r.code, 503)
        c.close()
        # An authorization identity other than the user is refused like a wrong password.
        self.assertEqual(self.s.auth("alice", "alice-secret")[0], 235)
        c, _ = self.s.tls_conn()
        self.assertEqual(c.command("AUTH PLAIN " + plain("alice", "alice-secret", authz="bob")).code, 535)
        c.close()

    def test_authenticated_relay_received_and_refusal_without_auth(self):
        c, _ = self.s.tls_conn()
        self.assertEqual(c.command("MAIL FROM:<alice@example.org>").code, 250)
        r = c.command("RCPT TO:<friend@elsewhere.test>")
        self.assertEqual((r.code, r.text), (550, "5.7.1 Relaying denied"))
        c.command("RSET")
        self.assertEqual(c.command("AUTH PLAIN " + plain("bob", "bob-secret")).code, 235)
        self.assertEqual(c.command("MAIL FROM:<alice@example.org>").code, 553)   # not bob's
        self.assertEqual(c.command("MAIL FROM:<anyone@Example.NET> AUTH=<>").code, 250)   # bob owns @example.net
        self.assertEqual(c.command("RCPT TO:<friend@elsewhere.test>").code, 250)
        self.assertEqual(c.command("DATA").code, 354)
        r = c.command("Subject: hi\r\n\r\nbody\r\n.")
        self.assertEqual(r.code, 250)
        c.command("QUIT")
        queued = self.s.server.queue_list()
        self.assertEqual(len(queued), 1)
        shown = run_cli(["queue", "show", queued[0]["id"], "--spool", self.s.spool])
        self.assertIn(b"with ESMTPSA", shown.stdout)

    def test_failures_cool_the_client_off(self):
        pam = PamService(self)
        s = AuthServer(self, pam_backend("staff", pam), "staff", certs=self.certs,
                       auth_settings="client-failure-limit 3\ncool-off 1h")
        self.assertEqual(s.auth("alice", "bad1")[0], 535)
        self.assertEqual(s.auth("alice", "bad2")[0], 535)
        c, _ = s.tls_conn()
        r = c.command("AUTH PLAIN " + plain("bob", "bad3"))
        self.assertEqual((r.code, r.status), (421, "4.7.0"))
        c.expect_eof()
        # Cooling off: even the right password is not tried.
        code, _, took = s.auth("alice", "alice-secret")
        self.assertEqual(code, 421)
        self.assertEqual([e["result"] for e in s.logs("auth")], ["failed", "failed", "throttled", "throttled"])

    def test_no_password_in_any_log(self):
        pam = PamService(self)
        ldap = Slapd(self)
        secret = os.path.join(workdir(self), "secret")
        ldap.write_secret(secret)
        s = AuthServer(self, pam_backend("staff", pam) + "\n" + ldap_backend(ldap, secret), "staff directory",
                       certs=self.certs)
        s.server.stop()
        s.server.extra_args = ["--debug"]
        s.server.start()
        s.port = s.server.listener_port("sub")
        s.auth("alice", "alice-secret")
        s.auth("alice", "Sup3rS3cretWrong")
        c, _ = s.tls_conn()
        c.command("AUTH LOGIN")
        c.command(base64.b64encode(b"bob").decode())
        c.command(base64.b64encode(b"LoginPassw0rd").decode())
        c.close()
        text = s.log_text()
        for secret_text in ("alice-secret", "Sup3rS3cretWrong", "LoginPassw0rd", "bob-secret", ldap.service_password,
                            plain("alice", "alice-secret"), base64.b64encode(b"LoginPassw0rd").decode()):
            self.assertNotIn(secret_text, text)
        self.assertIn("level=debug", text)


class RealClientTests(unittest.TestCase):
    def setUp(self):
        self.pam = PamService(self)
        self.s = AuthServer(self, pam_backend("staff", self.pam), "staff", listener_extra="tls required",
                            senders={"alice": ["alice@example.org"]})

    def test_msmtp_roaming_user(self):
        msmtp = require_tool("msmtp")
        d = workdir(self)
        rc = os.path.join(d, "msmtprc")
        with open(rc, "w") as f:
            f.write(f"""defaults
tls on
tls_starttls on
tls_trust_file {self.s.certs}/ca.pem
account roaming
host 127.0.0.1
port {self.s.port}
auth plain
user alice
password alice-secret
from alice@example.org
""")
        os.chmod(rc, 0o600)
        msg = b"From: alice@example.org\r\nTo: friend@elsewhere.test\r\nSubject: via msmtp\r\n\r\nhello\r\n"
        r = subprocess.run([msmtp, "-C", rc, "-a", "roaming", "friend@elsewhere.test"], input=msg,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
        self.assertEqual(r.returncode, 0, r.stdout)
        queued = self.s.server.queue_list()
        self.assertEqual([q["sender"] for q in queued], ["alice@example.org"])
        # The wrong password: msmtp fails and nothing is queued.
        with open(rc) as f:
            text = f.read().replace("password alice-secret", "password wrong")
        with open(rc, "w") as f:
            f.write(text)
        r = subprocess.run([msmtp, "-C", rc, "-a", "roaming", "friend@elsewhere.test"], input=msg,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
        self.assertNotEqual(r.returncode, 0)
        self.assertEqual(len(self.s.server.queue_list()), 1)

    def test_swaks_starttls_and_implicit_tls(self):
        swaks = require_tool("swaks")
        for port, tls in ((self.s.port, "--tls"), (self.s.implicit_port, "--tlsc")):
            r = subprocess.run([swaks, "--server", "127.0.0.1", "--port", str(port), tls, "--auth", "PLAIN",
                                "--auth-user", "alice", "--auth-password", "alice-secret", "--from", "alice@example.org",
                                "--to", "friend@elsewhere.test", "--timeout", "10"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
            self.assertEqual(r.returncode, 0, r.stdout.decode(errors="replace"))
            self.assertIn(b"235 2.7.0", r.stdout)
        self.assertEqual(len(self.s.server.queue_list()), 2)

    def test_smtplib_login_on_the_implicit_port(self):
        with smtplib.SMTP_SSL("127.0.0.1", self.s.implicit_port, context=self.s.context, timeout=10) as c:
            c.login("alice", "alice-secret")
            c.sendmail("alice@example.org", ["friend@elsewhere.test"], b"Subject: x\r\n\r\nbody\r\n")
        self.assertEqual(len(self.s.server.queue_list()), 1)

    def test_tls_required_listener_refuses_mail_before_starttls(self):
        c = SMTPConn(self, "127.0.0.1", self.s.port)
        c.reply()
        c.ehlo()
        r = c.command("MAIL FROM:<alice@example.org>")
        self.assertEqual((r.code, r.status), (530, "5.7.0"))
        c.close()


class ExplainTests(unittest.TestCase):
    def test_explain_auth_and_cert(self):
        certs = make_certs(self)
        d = workdir(self)
        conf = os.path.join(d, "policy.conf")
        with open(conf, "w") as f:
            f.write(f"""spool {d}/spool
ca corp file "{certs}/ca.pem"
users staff {{ alice }}
listener sub {{ address 127.0.0.1:0 }}
rules {{
    relay authenticated <staff>
    relay tls certificate ca corp
    refuse
}}
""")
        r = run_cli(["explain", "--config", conf, "--client", "203.0.113.9", "--tls", "--auth", "alice",
                     "--rcpt", "x@elsewhere.test", "--json"])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(b'"relay"', r.stdout)
        for pem, verdict in (("client.pem", b"relay"), ("impostor-client.pem", b"refuse"),
                             ("expired-client.pem", b"refuse"), ("selfsigned-client.pem", b"refuse")):
            r = run_cli(["explain", "--config", conf, "--client", "203.0.113.9", "--tls", "--cert",
                         os.path.join(certs, pem), "--rcpt", "x@elsewhere.test"])
            self.assertEqual(r.returncode, 0, r.stderr)
            first = r.stdout.decode().splitlines()
            self.assertTrue(any(verdict.decode() in line for line in first[:3]), (pem, r.stdout))


if __name__ == "__main__":
    unittest.main()
