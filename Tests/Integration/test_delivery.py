"""Delivery end to end: the real binary resolves through a private dnsmasq and delivers to SMTP
servers the tests start on 127.0.0.x (Python sinks with scripted behaviour, and Postfix's smtp-sink).

What must hold: recipients are grouped per destination; hosts are tried in MX order; 4xx and broken
connections are retried, 5xx bounced with an RFC 3464 DSN from <> (never a bounce to <>); Null MX and
NXDOMAIN bounce at once; a backup MX never delivers to itself; a crash during delivery loses no
recipient and duplicates only the transaction in flight.
"""

import email
import email.policy
import os
import re
import signal
import socket
import subprocess
import time
import unittest

from dnssec import SignedZone, tlsa_for
from downstream import Behaviour, Dnsmasq, PostfixSink, SinkServer, free_udp_tcp_port, port_free
from harness import SMTPConn, make_certs, run_cli, workdir
from test_policies import PolicyServer, write

WAIT = 15.0


def mx_port():
    """One port free on every 127.0.0.x the tests use, for all the sinks (MX hosts are reached on it)."""
    for _ in range(50):
        p = free_udp_tcp_port("127.0.0.1")
        if all(port_free(f"127.0.0.{i}", p) for i in range(10, 40)):
            return p
    raise AssertionError("no port free on 127.0.0.10-39")


class Relay:
    """A relaygate that relays for 127.0.0.1, resolves through `dns` and reaches MX hosts on `port`."""

    def __init__(self, test, dns, port, extra="", rules="relay from <local>\n    refuse", hostname="relay.test", dns_block=True,
                 outbound=True,
                 queue="retry-first 1s\n    retry-max 2s\n    scan-interval 1s\n    connect-timeout 2s\n    reply-timeout 3s\n    backoff 1s"):
        self.test = test
        d = workdir(test)
        self.spool = os.path.join(d, "spool")
        self.config = write(os.path.join(d, "relaygate.conf"), f"""hostname {hostname}
spool {self.spool}
listener default {{ address 127.0.0.1:0 }}
limits {{ command-timeout 10s; data-timeout 10s; shutdown-timeout 3s }}
{f"dns {{ upstream {dns.upstream} }}" if dns_block else ""}
{f"outbound {{ port {port} }}" if outbound else ""}
queue {{
    {queue}
}}
networks local {{ 127.0.0.1 }}
domains backed-up {{ backup.test loop.test }}
{extra}
rules {{
    {rules}
}}
""")
        self.server = PolicyServer(test, self.config, self.spool)

    @property
    def port(self):
        return self.server.listener_port("default")

    def send(self, sender, recipients, body="Subject: test\r\n\r\nhello\r\n", source=None):
        c = SMTPConn(self.test, "127.0.0.1", self.port, source=source)
        c.reply()
        c.ehlo()
        self.test.assertEqual(c.command(f"MAIL FROM:<{sender}>").code, 250)
        codes = [c.command(f"RCPT TO:<{r}>").code for r in recipients]
        if 250 in codes:
            self.test.assertEqual(c.command("DATA").code, 354)
            r = c.command(body.rstrip("\r\n") + "\r\n.")
            self.test.assertEqual(r.code, 250, r)
        c.command("QUIT")
        c.close()
        return codes

    def logs(self, event=None):
        return self.server.logs(event)

    def wait_log(self, predicate, what, timeout=WAIT):
        return self.server.wait_for_log(predicate, timeout=timeout, what=what)

    def wait_queue_empty(self, timeout=WAIT):
        deadline = time.monotonic() + timeout
        for _ in range(int(timeout * 20)):
            # The queue file goes first, then its state file.
            empty = not os.listdir(os.path.join(self.spool, "queue")) and not os.listdir(os.path.join(self.spool, "state"))
            if empty or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        self.test.assertEqual(os.listdir(os.path.join(self.spool, "queue")), [], self.server.log_text())
        self.test.assertEqual(os.listdir(os.path.join(self.spool, "state")), [])


def parse(data):
    return email.message_from_bytes(data, policy=email.policy.compat32)


def dsn_parts(message):
    """(human text, per-message fields, [per-recipient fields], returned part) of a multipart/report."""
    assert message.get_content_type() == "multipart/report", message.get_content_type()
    assert message.get_param("report-type") == "delivery-status"
    text, status, returned = message.get_payload()
    blocks = [dict(h.items()) for h in status.get_payload()]
    return text.get_payload(), blocks[0], blocks[1:], returned


class DeliveryTests(unittest.TestCase):
    def setUp(self):
        self.port = mx_port()

    def dns(self, *records):
        return Dnsmasq(self, records=list(records))

    def sink(self, host, **behaviour):
        return SinkServer(self, host=host, port=self.port, behaviour=Behaviour(**behaviour))

    def test_recipients_grouped_per_destination_and_delivered_once(self):
        dns = self.dns(("dest.test", "MX", 10, "mx.dest.test"), ("mx.dest.test", "A", "127.0.0.10"),
                       ("other.test", "MX", 10, "mx.other.test"), ("mx.other.test", "A", "127.0.0.11"))
        a, b = self.sink("127.0.0.10"), self.sink("127.0.0.11")
        r = Relay(self, dns, self.port)
        r.send("alice@origin.test", ["b1@dest.test", "b2@DEST.test", "c@other.test", "b3@dest.test"])
        a.wait_for(1)
        b.wait_for(1)
        r.wait_queue_empty()
        (t,) = a.transactions
        self.assertEqual(t.recipients, ["b1@dest.test", "b2@DEST.test", "b3@dest.test"])
        self.assertEqual(t.mail_from, "alice@origin.test")
        self.assertIn(b"hello", t.data)
        self.assertRegex(t.data.decode(), r"^Received: from client\.test \(\[127\.0\.0\.1\]\)")
        self.assertEqual(b.transactions[0].recipients, ["c@other.test"])
        delivered = [e for e in r.logs("delivery") if e["result"] == "delivered"]
        self.assertEqual(len(delivered), 4)
        self.assertTrue(all(e["relay"].startswith(("mx.dest.test[127.0.0.10", "mx.other.test[127.0.0.11")) for e in delivered))
        self.assertEqual(len(a.connections), 1)

    def test_mx_order_and_next_host_when_the_first_refuses(self):
        dns = self.dns(("dest.test", "MX", 20, "second.dest.test"), ("dest.test", "MX", 10, "first.dest.test"),
                       ("first.dest.test", "A", "127.0.0.12"), ("second.dest.test", "A", "127.0.0.13"))
        first, second = self.sink("127.0.0.12"), self.sink("127.0.0.13")
        first.refuse_connections()
        r = Relay(self, dns, self.port)
        r.send("a@origin.test", ["x@dest.test"])
        second.wait_for(1)
        r.wait_queue_empty()
        self.assertEqual(len(first.connections), 0)
        (e,) = [e for e in r.logs("delivery")]
        self.assertTrue(e["relay"].startswith("second.dest.test[127.0.0.13"), e)
        connect = r.logs("connect")
        self.assertTrue(any("first.dest.test" in c.get("relay", "") for c in connect), r.server.log_text())

    def test_implicit_mx_starttls_and_received_record(self):
        certs = make_certs(self)
        dns = self.dns(("plain.test", "A", "127.0.0.14"))
        s = SinkServer(self, host="127.0.0.14", port=self.port, behaviour=Behaviour(starttls=True),
                       tls=(f"{certs}/server.pem", f"{certs}/server.key"))
        r = Relay(self, dns, self.port)
        r.send("a@origin.test", ["x@plain.test"])
        s.wait_for(1)
        r.wait_queue_empty()
        self.assertTrue(s.transactions[0].tls)
        (e,) = r.logs("delivery")
        self.assertTrue(e["tls"].startswith("TLSv1.3"), e)

    def test_temporary_failure_is_retried_then_delivered(self):
        dns = self.dns(("dest.test", "MX", 10, "mx.dest.test"), ("mx.dest.test", "A", "127.0.0.15"))
        s = self.sink("127.0.0.15", rcpt_reply="451 4.7.1 greylisted, come back later")
        # A sink's connection keeps the behaviour it started with: a new connection for each attempt.
        r = Relay(self, dns, self.port, queue="retry-first 1s\n    scan-interval 1s\n    connection-reuse 1")
        r.send("a@origin.test", ["x@dest.test"])
        r.wait_log(lambda e: e.get("event") == "delivery" and e.get("result") == "deferred", "a deferral")
        listed = json_list(r.spool)
        self.assertEqual(listed[0]["recipients"][0]["state"], "deferred")
        self.assertIn("451 4.7.1", listed[0]["recipients"][0]["reply"])
        s.set_behaviour(rcpt_reply=None)
        s.wait_for(1, timeout=WAIT)
        r.wait_queue_empty()
        results = [e["result"] for e in r.logs("delivery")]
        self.assertEqual(results[-1], "delivered")
        self.assertIn("deferred", results)

    def test_connections_are_reused_for_the_next_messages_within_bounds(self):
        dns = self.dns(("dest.test", "MX", 10, "mx.dest.test"), ("mx.dest.test", "A", "127.0.0.17"))
        s = self.sink("127.0.0.17", rcpt_replies={"no@dest.test": "550 5.1.1 no such user"})
        r = Relay(self, dns, self.port, queue="connection-reuse 3\n    connection-idle 2s\n    delivery-threads 1")
        r.send("a@origin.test", ["one@dest.test"])
        s.wait_for(1)
        r.send("a@origin.test", ["no@dest.test"])        # refused at RCPT: the next transaction needs RSET
        r.wait_log(lambda e: e.get("event") == "delivery" and e.get("result") == "bounced", "the refusal")
        r.send("a@origin.test", ["three@dest.test"])
        s.wait_for(2)
        r.send("a@origin.test", ["four@dest.test"])       # the fourth: a connection carries three
        s.wait_for(3)
        self.assertEqual(s.connections[0].verbs, ["EHLO", "MAIL", "RCPT", "DATA", ".", "MAIL", "RCPT", "RSET", "MAIL", "RCPT",
                                                  "DATA", ".", "QUIT"])
        self.assertEqual(len(s.connections), 2)
        time.sleep(3)                                      # idle past connection-idle: closed with QUIT
        self.assertEqual(s.connections[1].verbs[-1], "QUIT")
        self.assertIsNotNone(s.connections[1].ended)

    def test_hostile_or_silent_next_hops_defer_and_ipv6_delivers(self):
        # A server that greets with garbage, then one that never says anything: both tried in order,
        # then deferred. (An MX at ::1 would be this host itself, so IPv6 is reached by a route.)
        dns = self.dns(("dest.test", "MX", 10, "garbage.dest.test"), ("dest.test", "MX", 20, "silent.dest.test"),
                       ("garbage.dest.test", "A", "127.0.0.18"), ("silent.dest.test", "A", "127.0.0.19"))
        garbage = self.sink("127.0.0.18", greeting="hello, this is not SMTP")
        silent = self.sink("127.0.0.19", silent_at="greeting")
        v6 = SinkServer(self, host="::1", port=self.port)
        r = Relay(self, dns, self.port, extra=f'route v6.test {{ to "[::1]:{self.port}"; tls none }}')
        r.send("a@origin.test", ["x@dest.test", "y@v6.test"])
        v6.wait_for(1, timeout=WAIT)
        e = r.wait_log(lambda e: e.get("event") == "delivery" and e.get("result") == "deferred", "a deferral")
        self.assertIn("silent.dest.test[127.0.0.19]: read: Connection timed out", e["reply"])
        errors = {c["relay"].split("[")[0]: c["error"] for c in r.logs("connect") if "relay" in c}
        self.assertEqual(sorted(errors), ["garbage.dest.test", "silent.dest.test"])
        self.assertEqual((len(garbage.connections), len(silent.connections)), (1, 1))
        d = r.wait_log(lambda x: x.get("event") == "delivery" and x.get("result") == "delivered", "the IPv6 delivery")
        self.assertEqual((d["to"], d["relay"]), ("<y@v6.test>", f"::1[[::1]:{self.port}]"))
        self.assertEqual(v6.transactions[0].recipients, ["y@v6.test"])

    def test_connection_dropped_in_data_is_retried(self):
        dns = self.dns(("dest.test", "MX", 10, "mx.dest.test"), ("mx.dest.test", "A", "127.0.0.16"))
        s = self.sink("127.0.0.16", close_in_data=10)
        r = Relay(self, dns, self.port)
        r.send("a@origin.test", ["x@dest.test"], body="Subject: long\r\n\r\n" + "line of text\r\n" * 100)
        r.wait_log(lambda e: e.get("event") == "delivery" and e.get("result") == "deferred", "a deferral")
        s.set_behaviour(close_in_data=None)
        s.wait_for(1)
        r.wait_queue_empty()
        self.assertEqual(len(s.transactions), 1)
        self.assertEqual(s.transactions[0].data.count(b"line of text"), 100)


class NextHopTests(unittest.TestCase):
    """What the next hop offers shapes what is sent: DSN parameters, SMTPUTF8, TLS levels, routes."""

    def setUp(self):
        self.port = mx_port()
        self.dns = Dnsmasq(self, records=[
            ("dest.test", "MX", 10, "mx.dest.test"), ("mx.dest.test", "A", "127.0.0.25"),
            ("origin.test", "MX", 10, "mx.origin.test"), ("mx.origin.test", "A", "127.0.0.26")])
        self.origin = SinkServer(self, host="127.0.0.26", port=self.port)

    def test_dsn_parameters_pass_on_and_rewriting_applies(self):
        s = SinkServer(self, host="127.0.0.25", port=self.port, behaviour=Behaviour(dsn=True))
        r = Relay(self, self.dns, self.port, extra="rewrite { old@dest.test new@dest.test; @legacy.test @dest.test }")
        c = SMTPConn(self, "127.0.0.1", r.port)
        c.reply()
        c.ehlo()
        self.assertEqual(c.command("MAIL FROM:<a@origin.test> RET=HDRS ENVID=id+2B1").code, 250)
        self.assertEqual(c.command("RCPT TO:<old@dest.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;old@dest.test").code, 250)
        self.assertEqual(c.command("RCPT TO:<someone@legacy.test>").code, 250)
        c.command("DATA")
        self.assertEqual(c.command("Subject: x\r\n\r\nbody\r\n.").code, 250)
        c.close()
        s.wait_for(1)
        r.wait_queue_empty()
        (t,) = s.transactions
        self.assertEqual(t.recipients, ["new@dest.test", "someone@dest.test"])
        self.assertEqual((t.mail_params.get("RET"), t.mail_params.get("ENVID")), ("HDRS", "id+2B1"))
        self.assertEqual(t.rcpts[0].params.get("NOTIFY"), "SUCCESS,FAILURE")
        self.assertEqual(t.rcpts[0].params.get("ORCPT"), "rfc822;old@dest.test")
        rewritten = [e.get("rewritten") for e in r.logs("delivery")]
        self.assertEqual(rewritten, ["<new@dest.test>", "<someone@dest.test>"])
        time.sleep(0.5)
        self.assertEqual(self.origin.transactions, [])   # the next hop reports; no "relayed" DSN from here

    def test_notify_success_to_a_next_hop_without_dsn_gets_a_relayed_report(self):
        s = SinkServer(self, host="127.0.0.25", port=self.port, behaviour=Behaviour(dsn=False))
        r = Relay(self, self.dns, self.port)
        c = SMTPConn(self, "127.0.0.1", r.port)
        c.reply()
        c.ehlo()
        self.assertEqual(c.command("MAIL FROM:<a@origin.test>").code, 250)
        self.assertEqual(c.command("RCPT TO:<tell@dest.test> NOTIFY=SUCCESS").code, 250)
        self.assertEqual(c.command("RCPT TO:<quiet@dest.test>").code, 250)
        c.command("DATA")
        self.assertEqual(c.command("Subject: x\r\n\r\nbody\r\n.").code, 250)
        c.close()
        s.wait_for(1)
        self.origin.wait_for(1)
        (t,) = self.origin.transactions
        self.assertEqual(t.mail_from, "")
        m = parse(t.data)
        _, _, per_rcpt, _ = dsn_parts(m)
        self.assertEqual([(f["Final-Recipient"], f["Action"], f["Status"]) for f in per_rcpt],
                         [("rfc822; tell@dest.test", "relayed", "2.0.0")])
        self.assertIn("Successful Mail Delivery Report", m["Subject"])

    def test_smtputf8_to_a_next_hop_without_it_bounces_5_6_7(self):
        SinkServer(self, host="127.0.0.25", port=self.port, behaviour=Behaviour(smtputf8=False))
        r = Relay(self, self.dns, self.port)
        c = SMTPConn(self, "127.0.0.1", r.port)
        c.reply()
        c.ehlo()
        self.assertEqual(c.command("MAIL FROM:<a@origin.test> SMTPUTF8").code, 250)
        self.assertEqual(c.command("RCPT TO:<jöran@dest.test>").code, 250)
        c.command("DATA")
        self.assertEqual(c.command("Subject: x\r\n\r\nbody\r\n.").code, 250)
        c.close()
        self.origin.wait_for(1)
        _, _, (f,), _ = dsn_parts(parse(self.origin.transactions[0].data))
        self.assertEqual(f["Status"], "5.6.7")

    def test_tls_encrypt_and_verify_levels_never_fall_back(self):
        certs = make_certs(self)
        plain = SinkServer(self, host="127.0.0.25", port=self.port)
        r = Relay(self, self.dns, self.port, extra="route dest.test { to mx.dest.test; tls encrypt }")
        r.send("a@origin.test", ["x@dest.test"])
        e = r.wait_log(lambda e: e.get("event") == "delivery" and e.get("result") == "deferred", "a deferral")
        self.assertIn("TLS is required", e["reply"])
        plain.stop()
        tls = SinkServer(self, host="127.0.0.25", port=self.port, behaviour=Behaviour(starttls=True),
                         tls=(f"{certs}/server.pem", f"{certs}/server.key"))
        r2 = Relay(self, self.dns, self.port, extra="route dest.test { to mx.dest.test; tls verify }")
        r2.send("a@origin.test", ["y@dest.test"])
        e = r2.wait_log(lambda e: e.get("event") == "delivery" and e.get("result") == "deferred", "a deferral")
        self.assertIn("certificate verify failed", e["reply"])   # a private CA is not in the system store
        time.sleep(1.5)
        # The first relay (encrypt, no verification) delivers x over TLS now; y never leaves.
        self.assertEqual([t.recipients for t in tls.transactions if "y@dest.test" in t.recipients], [])

    def test_tls_verify_checks_the_chain_and_the_mx_name(self):
        certs = make_certs(self, "mx.dest.test")
        s = SinkServer(self, host="127.0.0.25", port=self.port, behaviour=Behaviour(starttls=True),
                       tls=(f"{certs}/server.pem", f"{certs}/server.key"))
        r = Relay(self, self.dns, self.port, extra=f'outbound {{ port {self.port}; tls verify; ca-file "{certs}/ca.pem" }}',
                  outbound=False)
        r.send("a@origin.test", ["x@dest.test"])
        s.wait_for(1)
        r.wait_queue_empty()
        # The same server reached under a name its certificate does not carry: refused.
        dns2 = Dnsmasq(self, records=[("dest.test", "MX", 10, "other-name.dest.test"), ("other-name.dest.test", "A", "127.0.0.25")])
        r2 = Relay(self, dns2, self.port, extra=f'outbound {{ port {self.port}; tls verify; ca-file "{certs}/ca.pem" }}',
                   outbound=False)
        r2.send("a@origin.test", ["y@dest.test"])
        e = r2.wait_log(lambda e: e.get("event") == "delivery" and e.get("result") == "deferred", "a deferral")
        self.assertIn("certificate verify failed", e["reply"])
        self.assertEqual([t.recipients for t in s.transactions], [["x@dest.test"]])

    def test_smart_host_with_auth_over_tls(self):
        # The next hop is another relaygate: submission with STARTTLS and AUTH against a PAM service.
        from backends import PamService
        certs = make_certs(self)
        pam = PamService(self, users={"gateway": "gw-secret"})
        d = workdir(self)
        upstream_spool = os.path.join(d, "up-spool")
        up_conf = write(os.path.join(d, "upstream.conf"), f"""hostname provider.test
spool {upstream_spool}
outbound {{ delivery no }}
tls {{ certificate "{certs}/server.pem" "{certs}/server.key" }}
pam staff {{ service {pam.service}; confdir "{pam.confdir}" }}
auth {{ failure-delay 100ms; sender-binding no }}
listener submission {{ address 127.0.0.1:0; tls required; auth staff }}
rules {{ relay authenticated; refuse }}
""")
        upstream = PolicyServer(self, up_conf, upstream_spool)
        secret = write(os.path.join(d, "provider.secret"), "gw-secret\n")
        r = Relay(self, self.dns, self.port, extra=f"""route default {{
    to "[127.0.0.1]:{upstream.listener_port('submission')}"
    tls encrypt
    user gateway
    password-file "{secret}"
}}""")
        r.send("a@origin.test", ["anyone@elsewhere.test"])
        r.wait_queue_empty()
        (e,) = r.logs("delivery")
        self.assertEqual(e["result"], "delivered", e)
        self.assertTrue(e["tls"].startswith("TLSv1"), e)
        (auth,) = upstream.logs("auth")
        self.assertEqual((auth["result"], auth["user"]), ("ok", "gateway"))
        self.assertEqual(len(upstream.queue_list()), 1)


class BounceTests(unittest.TestCase):
    def setUp(self):
        self.port = mx_port()
        self.dns = Dnsmasq(self, records=[
            ("dest.test", "MX", 10, "mx.dest.test"), ("mx.dest.test", "A", "127.0.0.20"),
            ("origin.test", "MX", 10, "mx.origin.test"), ("mx.origin.test", "A", "127.0.0.21"),
            ("nullmx.test", "MX", 0, "."), ("gone.test", "NXDOMAIN"), ("slow.test", "TIMEOUT")])
        self.dest = SinkServer(self, host="127.0.0.20", port=self.port,
                               behaviour=Behaviour(rcpt_replies={"bad@dest.test": "550 5.1.1 <bad@dest.test>: no such user"}))
        self.origin = SinkServer(self, host="127.0.0.21", port=self.port)

    def the_bounce(self):
        self.origin.wait_for(1)
        (t,) = self.origin.transactions
        self.assertEqual(t.mail_from, "")   # from <>
        return t, parse(t.data)

    def test_550_bounces_with_a_dsn_and_the_good_recipient_is_delivered(self):
        r = Relay(self, self.dns, self.port)
        r.send("alice@origin.test", ["good@dest.test", "bad@dest.test"],
               body="Subject: the original\r\nMessage-ID: <orig@origin.test>\r\n\r\nthe secret body\r\n")
        t, m = self.the_bounce()
        r.wait_queue_empty()
        self.assertEqual(t.recipients, ["alice@origin.test"])
        self.assertEqual(m["To"], "<alice@origin.test>")
        self.assertTrue(m["From"].startswith("Mail Delivery System <MAILER-DAEMON@relay.test>"))
        self.assertEqual(m["Auto-Submitted"], "auto-replied")
        text, per_message, per_rcpt, returned = dsn_parts(m)
        self.assertIn("<bad@dest.test>: smtp; 550 5.1.1", text)
        self.assertEqual(per_message["Reporting-MTA"], "dns; relay.test")
        (f,) = per_rcpt
        self.assertEqual((f["Final-Recipient"], f["Action"], f["Status"]), ("rfc822; bad@dest.test", "failed", "5.1.1"))
        self.assertEqual(f["Remote-MTA"], "dns; mx.dest.test")
        self.assertIn("550 5.1.1 <bad@dest.test>: no such user", f["Diagnostic-Code"])
        self.assertEqual(returned.get_content_type(), "text/rfc822-headers")
        self.assertIn("Subject: the original", returned.get_payload())
        self.assertNotIn("the secret body", t.data.decode())
        (d,) = self.dest.transactions
        self.assertEqual(d.recipients, ["good@dest.test"])
        results = sorted(e["result"] for e in r.logs("delivery"))
        self.assertEqual(results, ["bounced", "delivered", "delivered"])   # the second delivery is the DSN

    def test_null_mx_and_nxdomain_bounce_at_once_with_ret_full(self):
        r = Relay(self, self.dns, self.port)
        c = SMTPConn(self, "127.0.0.1", r.port)
        c.reply()
        c.ehlo()
        self.assertEqual(c.command("MAIL FROM:<alice@origin.test> RET=FULL ENVID=abc").code, 250)
        self.assertEqual(c.command("RCPT TO:<x@nullmx.test> ORCPT=rfc822;x@nullmx.test").code, 250)
        self.assertEqual(c.command("RCPT TO:<y@gone.test>").code, 250)
        c.command("DATA")
        self.assertEqual(c.command("Subject: full\r\n\r\nwhole body\r\n.").code, 250)
        c.close()
        t, m = self.the_bounce()
        _, per_message, per_rcpt, returned = dsn_parts(m)
        self.assertEqual(per_message["Original-Envelope-Id"], "abc")
        statuses = {f["Final-Recipient"]: f["Status"] for f in per_rcpt}
        self.assertEqual(statuses, {"rfc822; x@nullmx.test": "5.1.10", "rfc822; y@gone.test": "5.1.2"})
        self.assertEqual(per_rcpt[0]["Original-Recipient"], "rfc822;x@nullmx.test")
        self.assertEqual(returned.get_content_type(), "message/rfc822")
        self.assertIn(b"whole body", t.data)
        self.assertEqual(len(self.dest.transactions), 0)

    def test_no_bounce_to_the_null_sender(self):
        r = Relay(self, self.dns, self.port)
        r.send("", ["bad@dest.test"])
        r.wait_log(lambda e: e.get("event") == "bounce" and e.get("result") == "dropped", "the dropped bounce")
        r.wait_queue_empty()
        time.sleep(0.5)
        self.assertEqual(self.origin.transactions, [])

    def test_expiry_bounces_what_stays_deferred(self):
        self.dest.set_behaviour(rcpt_reply="451 4.3.0 try again")
        r = Relay(self, self.dns, self.port, queue="retry-first 1s\n    retry-max 1s\n    lifetime 3s\n    scan-interval 1s")
        r.send("alice@origin.test", ["stuck@dest.test"])
        t, m = self.the_bounce()
        r.wait_queue_empty()
        _, _, (f,), _ = dsn_parts(m)
        self.assertEqual(f["Status"], "4.4.7")
        self.assertIn("451 4.3.0 try again", f["Diagnostic-Code"])
        self.assertIn("Undelivered Mail: delivery time expired", m["Subject"])
        self.assertGreaterEqual(len([e for e in r.logs("delivery") if e["result"] == "deferred"]), 2)

    def test_one_delay_warning_when_asked_for_then_delivery(self):
        self.dest.set_behaviour(rcpt_reply="451 4.3.0 try again")
        r = Relay(self, self.dns, self.port, queue="retry-first 1s\n    retry-max 1s\n    delay-warning 2s\n    scan-interval 1s\n"
                                                   "    connection-reuse 1")
        r.send("alice@origin.test", ["slow@dest.test"])
        t, m = self.the_bounce()
        _, _, (f,), _ = dsn_parts(m)
        self.assertEqual((f["Action"], f["Status"]), ("delayed", "4.4.7"))
        self.assertIn("Delayed Mail", m["Subject"])
        self.dest.set_behaviour(rcpt_reply=None)
        self.dest.wait_for(1)
        r.wait_queue_empty()
        self.assertEqual(len(self.origin.transactions), 1)   # one warning, no bounce
        self.assertEqual(len(r.logs("delay-warning")), 1)

    def test_dns_timeout_defers(self):
        r = Relay(self, self.dns, self.port)
        r.send("alice@origin.test", ["x@slow.test"])
        e = r.wait_log(lambda e: e.get("event") == "delivery" and e.get("result") == "deferred", "a deferral", timeout=20)
        self.assertIn("MX lookup for slow.test failed", e["reply"])
        self.assertEqual(self.origin.transactions, [])


class BackupMXTests(unittest.TestCase):
    """relay.test is MX 20 for backup.test (primary at MX 10) and the best MX of loop.test."""

    def setUp(self):
        self.port = mx_port()
        self.dns = Dnsmasq(self, records=[
            ("backup.test", "MX", 10, "primary.backup.test"), ("backup.test", "MX", 20, "relay.test"),
            ("backup.test", "MX", 30, "worse.backup.test"),
            ("primary.backup.test", "A", "127.0.0.30"), ("relay.test", "A", "127.0.0.31"),
            ("worse.backup.test", "A", "127.0.0.32"),
            ("loop.test", "MX", 5, "relay.test"), ("loop.test", "MX", 10, "primary.backup.test")])
        self.primary = SinkServer(self, host="127.0.0.30", port=self.port)
        self.worse = SinkServer(self, host="127.0.0.32", port=self.port)

    def relay(self):
        return Relay(self, self.dns, self.port, rules="relay to <backed-up>\n    refuse")

    def test_primary_down_queued_and_retried_then_delivered_never_to_itself(self):
        self.primary.refuse_connections()
        r = self.relay()
        r.send("someone@outside.test", ["user@backup.test"], source="127.0.0.9")
        r.wait_log(lambda e: e.get("event") == "delivery" and e.get("result") == "deferred", "a deferral")
        self.assertEqual(len(os.listdir(os.path.join(r.spool, "queue"))), 1)
        time.sleep(1.5)
        self.assertEqual(self.worse.connections, [])   # equal or worse preference: dropped
        self.primary.accept_connections()
        self.primary.wait_for(1, timeout=WAIT)
        r.wait_queue_empty()
        self.assertEqual(self.worse.connections, [])
        out = run_cli(["route", "--config", r.config, "user@backup.test", "--json"])
        self.assertEqual(out.returncode, 0, out.stderr)
        import json
        (route,) = json.loads(out.stdout)["routes"]
        self.assertEqual([h["name"] for h in route["hosts"]], ["primary.backup.test"])
        self.assertEqual(sorted(d["exchange"] for d in route["dropped"]), ["relay.test", "worse.backup.test"])

    def test_best_mx_is_refused_at_rcpt_as_a_loop(self):
        r = self.relay()
        c = SMTPConn(self, "127.0.0.1", r.port, source="127.0.0.9")
        c.reply()
        c.ehlo()
        c.command("MAIL FROM:<someone@outside.test>")
        rl = c.command("RCPT TO:<user@loop.test>")
        self.assertEqual((rl.code, rl.status), (550, "5.4.6"))
        self.assertEqual(c.command("RCPT TO:<user@backup.test>").code, 250)
        c.close()
        (e,) = [e for e in r.logs("refuse") if e.get("stage") == "rcpt"]
        self.assertEqual(e["rule"], "builtin:mail-loop")


class RealSinkAndQueueToolTests(unittest.TestCase):
    def setUp(self):
        self.port = mx_port()
        self.dns = Dnsmasq(self, records=[("dest.test", "MX", 10, "mx.dest.test"), ("mx.dest.test", "A", "127.0.0.35")])

    def test_postfix_smtp_sink_receives_everything(self):
        sink = PostfixSink(self, host="127.0.0.35", port=self.port)
        r = Relay(self, self.dns, self.port)
        for i in range(10):
            r.send(f"s{i}@origin.test", [f"r{i}a@dest.test", f"r{i}b@dest.test"])
        r.wait_queue_empty(timeout=20)
        dumps = sink.dumps()
        self.assertEqual(len(dumps), 10)
        self.assertEqual(sorted(len(d["rcpts"]) for d in dumps), [2] * 10)

    def test_hold_release_bounce_remove_flush_while_running(self):
        sink = SinkServer(self, host="127.0.0.35", port=self.port, behaviour=Behaviour(rcpt_reply="451 4.3.0 later"))
        r = Relay(self, self.dns, self.port,
                  queue="retry-first 1h\n    scan-interval 1s\n    connect-timeout 2s\n    connection-reuse 1")
        r.send("", ["a@dest.test"])
        r.send("", ["b@dest.test"])
        r.wait_log(lambda e: len([x for x in r.logs("delivery") if x["result"] == "deferred"]) >= 2 or None, "two deferrals")
        ids = sorted(os.listdir(os.path.join(r.spool, "queue")))
        self.assertEqual(len(ids), 2)
        # hold: out of the queue runner's sight; list shows it held.
        self.assertEqual(run_cli(["queue", "hold", ids[0], "--spool", r.spool]).returncode, 0)
        listed = {e["id"]: e for e in json_list(r.spool)}
        self.assertTrue(listed[ids[0]]["held"])
        sink.set_behaviour(rcpt_reply=None)
        self.assertEqual(run_cli(["queue", "flush", "--spool", r.spool, ids[1]]).returncode, 0)
        sink.wait_for(1)
        time.sleep(1.5)
        self.assertEqual(len(sink.transactions), 1)          # the held one waited
        self.assertEqual(run_cli(["queue", "release", ids[0], "--spool", r.spool]).returncode, 0)
        self.assertEqual(run_cli(["queue", "flush", "--domain", "dest.test", "--spool", r.spool]).returncode, 0)
        sink.wait_for(2)
        r.wait_queue_empty()
        # remove and bounce on fresh messages
        sink.set_behaviour(rcpt_reply="451 4.3.0 later")
        r.send("", ["c@dest.test"])
        r.send("", ["d@dest.test"])
        r.wait_log(lambda e: len([x for x in r.logs("delivery") if x["result"] == "deferred"]) >= 4 or None, "deferrals")
        c_id, d_id = sorted(os.listdir(os.path.join(r.spool, "queue")))
        self.assertEqual(run_cli(["queue", "remove", c_id, "--spool", r.spool]).returncode, 0)
        self.assertEqual(run_cli(["queue", "bounce", d_id, "--spool", r.spool]).returncode, 0)
        r.wait_log(lambda e: e.get("event") == "bounce-requested", "the bounce request")
        r.wait_queue_empty()
        self.assertEqual(run_cli(["queue", "remove", c_id, "--spool", r.spool]).returncode, 1)


class CrashTests(unittest.TestCase):
    def test_kill9_during_delivery_loses_nothing_and_duplicates_only_the_transaction_in_flight(self):
        port = mx_port()
        dns = Dnsmasq(self, records=[("dest.test", "MX", 10, "mx.dest.test"), ("mx.dest.test", "A", "127.0.0.36")])
        sink = SinkServer(self, host="127.0.0.36", port=port, behaviour=Behaviour(silent_at="dot"))
        r = Relay(self, dns, port, queue="retry-first 1s\n    scan-interval 1s\n    reply-timeout 30s\n    delivery-threads 2")
        n = 6
        for i in range(n):
            r.send("a@origin.test", [f"r{i}@dest.test"])
        # Two transactions are in flight, waiting for the reply after the dot: kill -9 now.
        deadline = time.monotonic() + WAIT
        for _ in range(300):
            if len(sink.attempts) >= 2 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        in_flight = len(sink.attempts)
        self.assertGreaterEqual(in_flight, 1)
        r.server.kill9()
        sink.set_behaviour(silent_at=None)
        r.server.restart()
        sink.wait_for(n, timeout=30)
        r.wait_queue_empty(timeout=30)
        delivered = [a for t in sink.transactions if t.accepted for a in t.recipients]
        self.assertEqual(sorted(set(delivered)), sorted(f"r{i}@dest.test" for i in range(n)))
        # Each recipient was completed exactly once; the unanswered transactions are the only repeats.
        self.assertEqual(len(delivered), n)
        self.assertLessEqual(len(sink.attempts), n + in_flight)


class DANETests(unittest.TestCase):
    """An MX host in a DNSSEC-signed zone (private nsd) with TLSA records: DANE (RFC 7672)."""

    @classmethod
    def setUpClass(cls):
        # The server certificate names the MX host, as DANE-TA(2) requires (RFC 7672 3.2.3).
        cls.certs = make_certs(cls, "mx.dane.test")

    def relay(self, zone):
        anchors = zone.trust_anchor_file
        return Relay(self, zone, self.port, extra=f'dns {{ upstream {zone.upstream}; trust-anchor-file "{anchors}" }}',
                     dns_block=False)

    def setUp(self):
        self.port = mx_port()

    def zone(self, tlsa, tamper=False):
        return SignedZone(self, zone="dane.test", records=[
            ("dane.test", "MX", 10, "mx.dane.test"), ("mx.dane.test", "A", "127.0.0.38"),
            ("_%d._tcp.mx.dane.test" % self.port, "TLSA", *tlsa)], tamper=tamper)

    def sink(self, cert="server", starttls=True):
        return SinkServer(self, host="127.0.0.38", port=self.port, behaviour=Behaviour(starttls=starttls),
                          tls=(f"{self.certs}/{cert}.pem", f"{self.certs}/{cert}.key"))

    def test_matching_tlsa_authenticates_the_server(self):
        s = self.sink()
        r = self.relay(self.zone((3, 1, 1, tlsa_for(f"{self.certs}/server.pem"))))
        r.send("a@origin.test", ["x@dane.test"])
        s.wait_for(1)
        r.wait_queue_empty()
        (e,) = r.logs("delivery")
        self.assertTrue(e["tls"].endswith("dane"), e)
        self.assertTrue(s.transactions[0].tls)

    def test_dane_ta_record_for_the_issuing_ca(self):
        # A DANE-TA digest matches a certificate the server sends: its chain includes the CA.
        with open(f"{self.certs}/chain.pem", "w") as out:
            for part in ("server.pem", "ca.pem"):
                with open(f"{self.certs}/{part}") as f:
                    out.write(f.read())
        s = SinkServer(self, host="127.0.0.38", port=self.port, behaviour=Behaviour(starttls=True),
                       tls=(f"{self.certs}/chain.pem", f"{self.certs}/server.key"))
        r = self.relay(self.zone((2, 0, 1, tlsa_for(f"{self.certs}/ca.pem", usage=2))))
        r.send("a@origin.test", ["x@dane.test"])
        s.wait_for(1)
        r.wait_queue_empty()
        self.assertTrue(r.logs("delivery")[0]["tls"].endswith("dane"))

    def test_wrong_certificate_or_no_starttls_is_never_delivered(self):
        s = self.sink(cert="other-client")   # a certificate the TLSA record does not name
        r = self.relay(self.zone((3, 1, 1, tlsa_for(f"{self.certs}/server.pem"))))
        r.send("a@origin.test", ["x@dane.test"])
        e = r.wait_log(lambda e: e.get("event") == "delivery" and e.get("result") == "deferred", "a deferral")
        self.assertIn("certificate verify failed", e["reply"])
        s.set_behaviour(starttls=False)
        time.sleep(2.5)
        self.assertEqual(s.transactions, [])
        self.assertIn("TLS is required", r.server.log_text())

    def test_bogus_tlsa_is_a_temporary_failure(self):
        s = self.sink()
        r = self.relay(self.zone((3, 1, 1, tlsa_for(f"{self.certs}/server.pem")), tamper="TLSA"))
        r.send("a@origin.test", ["x@dane.test"])
        e = r.wait_log(lambda e: e.get("event") == "delivery" and e.get("result") == "deferred", "a deferral")
        self.assertIn("TLSA lookup failed", e["reply"])
        self.assertEqual(s.connections, [])


def json_list(spool):
    import json
    r = run_cli(["queue", "list", "--json", "--spool", spool])
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


if __name__ == "__main__":
    unittest.main()
