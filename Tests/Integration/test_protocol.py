"""The SMTP dialogue, reply by reply: extensions, every error reply, pipelining, DSN, SMTPUTF8 and
address forms, with Python's smtplib and raw sockets."""

import smtplib
import unittest

from harness import Server, dot_stuff, queued_id

MESSAGE = b"Subject: protocol test\r\n\r\nhello\r\n"


class ProtocolTestCase(unittest.TestCase):
    limits = {"message-size": "10k"}

    def setUp(self):
        self.server = Server(self, limits=self.limits)

    def conn(self, **kw):
        return self.server.connect(**kw)

    def expect(self, c, line, head, msg=None):
        r = c.command(line)
        self.assertEqual(r.head, head, msg or f"{line!r} -> {r}")
        return r


class GreetingAndEHLOTests(ProtocolTestCase):
    def test_greeting_names_host(self):
        c = self.conn(greet=False)
        r = c.reply()
        self.assertEqual(r.lines, ["220 relay.test ESMTP Relaygate"])

    def test_ehlo_lists_extensions_smtplib(self):
        with smtplib.SMTP("127.0.0.1", self.server.port, local_hostname="py.client.test", timeout=10) as c:
            code, text = c.ehlo()
            self.assertEqual(code, 250)
            self.assertEqual(text.split(b"\n")[0], b"relay.test")
            features = c.esmtp_features
        for ext in ["pipelining", "size", "8bitmime", "smtputf8", "enhancedstatuscodes", "dsn"]:
            self.assertIn(ext, features, features)
        self.assertEqual(features["size"], "10240")

    def test_ehlo_reply_exactly(self):
        c = self.conn()
        r = c.command("EHLO client.test")
        self.assertEqual(r.lines, ["250-relay.test", "250-PIPELINING", "250-SIZE 10240", "250-8BITMIME",
                                   "250-SMTPUTF8", "250-ENHANCEDSTATUSCODES", "250 DSN"])
        self.assertIsNone(r.status)

    def test_helo_reply_has_no_enhanced_code(self):
        c = self.conn()
        r = c.command("HELO client.test")
        self.assertEqual(r.lines, ["250 relay.test"])

    def test_simple_commands(self):
        c = self.conn()
        c.ehlo()
        self.expect(c, "NOOP", "250 2.0.0")
        self.expect(c, "NOOP anything at all", "250 2.0.0")
        self.expect(c, "RSET", "250 2.0.0")
        self.expect(c, "VRFY someone@example.test", "252 2.5.2")
        r = c.command("HELP")
        self.assertEqual(r.code, 214, r)
        self.expect(c, "QUIT", "221 2.0.0")
        c.expect_eof()

    def test_rset_ends_the_transaction(self):
        c = self.conn()
        c.ehlo()
        self.expect(c, "MAIL FROM:<a@origin.test>", "250 2.1.0")
        self.expect(c, "RSET", "250 2.0.0")
        self.expect(c, "RCPT TO:<b@destination.test>", "503 5.5.1")
        self.expect(c, "MAIL FROM:<a@origin.test>", "250 2.1.0")


class ErrorReplyTests(ProtocolTestCase):
    # (name, setup commands with their expected replies, command, expected reply)
    EHLO = ("EHLO client.test", "250")
    MAIL = ("MAIL FROM:<a@origin.test>", "250 2.1.0")
    RCPT = ("RCPT TO:<b@destination.test>", "250 2.1.5")
    CASES = [
        ("MAIL before EHLO", [], "MAIL FROM:<a@origin.test>", "503 5.5.1"),
        ("nested MAIL", [EHLO, MAIL], "MAIL FROM:<c@origin.test>", "503 5.5.1"),
        ("RCPT before MAIL", [EHLO], "RCPT TO:<b@destination.test>", "503 5.5.1"),
        ("DATA before MAIL", [EHLO], "DATA", "503 5.5.1"),
        ("DATA with no recipient", [EHLO, MAIL], "DATA", "554 5.5.1"),
        ("DATA with only a refused recipient", [EHLO, MAIL, ("RCPT TO:<Postmaster>", "550 5.1.1")], "DATA",
         "554 5.5.1"),
        ("unknown command", [EHLO], "FROBNICATE now", "500 5.5.1"),
        ("unknown command before EHLO", [], "XYZZY", "500 5.5.1"),
        ("EXPN", [EHLO], "EXPN staff", "502 5.5.1"),
        ("ETRN", [EHLO], "ETRN relay.test", "502 5.5.1"),
        ("STARTTLS", [EHLO], "STARTTLS", "502 5.5.1"),
        ("AUTH", [EHLO], "AUTH PLAIN AGFsaWNlAHNlY3JldA==", "502 5.5.1"),
        ("BDAT", [EHLO], "BDAT 10 LAST", "502 5.5.1"),
        ("MAIL without FROM:", [EHLO], "MAIL TO:<a@origin.test>", "501 5.5.2"),
        ("RCPT without TO:", [EHLO, MAIL], "RCPT FROM:<b@destination.test>", "501 5.5.2"),
        ("EHLO without name", [], "EHLO", "501 5.5.2"),
        ("bad sender: no domain", [EHLO], "MAIL FROM:<not-an-address>", "501 5.1.7"),
        ("bad sender: empty label", [EHLO], "MAIL FROM:<a@origin..test>", "501 5.1.7"),
        ("bad sender: no brackets", [EHLO], "MAIL FROM:a@origin.test", "501 5.1.7"),
        ("bad recipient: no domain", [EHLO, MAIL], "RCPT TO:<nobody>", "501 5.1.3"),
        ("bad recipient: hyphen label", [EHLO, MAIL], "RCPT TO:<b@-bad-.test>", "501 5.1.3"),
        ("bad recipient: null path", [EHLO, MAIL], "RCPT TO:<>", "501 5.1.3"),
        ("bad SIZE value", [EHLO], "MAIL FROM:<a@origin.test> SIZE=abc", "501 5.5.4"),
        ("bad BODY value", [EHLO], "MAIL FROM:<a@origin.test> BODY=9BIT", "501 5.5.4"),
        ("bad RET value", [EHLO], "MAIL FROM:<a@origin.test> RET=ALL", "501 5.5.4"),
        ("NOTIFY=NEVER with others", [EHLO, MAIL], "RCPT TO:<b@destination.test> NOTIFY=NEVER,SUCCESS",
         "501 5.5.4"),
        ("unknown MAIL parameter", [EHLO], "MAIL FROM:<a@origin.test> FOO=bar", "555 5.5.4"),
        ("unknown RCPT parameter", [EHLO, MAIL], "RCPT TO:<b@destination.test> XFOO", "555 5.5.4"),
        ("SIZE over the limit", [EHLO], "MAIL FROM:<a@origin.test> SIZE=10241", "552 5.3.4"),
        ("huge SIZE", [EHLO], "MAIL FROM:<a@origin.test> SIZE=99999999999999999999", "552 5.3.4"),
        ("non-ASCII sender without SMTPUTF8", [EHLO], "MAIL FROM:<j\u00fcrgen@origin.test>", "553 5.6.7"),
        ("non-ASCII recipient without SMTPUTF8", [EHLO, MAIL], "RCPT TO:<\u00e9l\u00e8ve@destination.test>",
         "553 5.6.7"),
        ("non-ASCII domain without SMTPUTF8", [EHLO, MAIL], "RCPT TO:<b@b\u00fccher.test>", "553 5.6.7"),
        ("bare Postmaster", [EHLO, MAIL], "RCPT TO:<Postmaster>", "550 5.1.1"),
        ("bare postmaster in lower case", [EHLO, MAIL], "RCPT TO:<postmaster>", "550 5.1.1"),
        ("command line over 512", [EHLO], "NOOP " + "x" * 600, "500 5.5.2"),
        ("MAIL over 1000", [EHLO], "MAIL FROM:<" + "a" * 990 + "@origin.test>", "500 5.5.2"),
        ("RCPT over 1000", [EHLO, MAIL], "RCPT TO:<b@destination.test> ORCPT=rfc822;" + "x" * 990,
         "500 5.5.2"),
        ("NUL in command", [EHLO], "NO\x00OP", "500 5.5.2"),
        ("control byte in command", [EHLO], "NOOP \x01", "500 5.5.2"),
        ("DEL in command", [EHLO], "NOOP \x7f", "500 5.5.2"),
        ("CR inside a command", [EHLO], "NOOP a\rb", "500 5.5.2"),
    ]

    def test_every_error_reply(self):
        for name, setup, command, head in self.CASES:
            with self.subTest(name):
                c = self.conn()
                for line, want in setup:
                    r = c.command(line)
                    self.assertEqual(r.head if " " in want else str(r.code), want, f"setup {line!r}: {r}")
                self.expect(c, command, head)
                # The session goes on after a single error.
                self.expect(c, "NOOP", "250 2.0.0", f"after {name}: session not usable")
                c.close()
        self.assertEqual(self.server.queue_list(), [])

    def test_bare_lf_command_refused_and_session_continues(self):
        c = self.conn()
        c.ehlo()
        c.send(b"NOOP\n")
        self.assertEqual(c.reply().head, "500 5.5.2")
        self.expect(c, "NOOP", "250 2.0.0")

    def test_long_recipient_line_is_allowed(self):
        # MAIL and RCPT may be longer than 512 octets (extension allowance), never over 1000.
        c = self.conn()
        c.ehlo()
        self.expect(c, "MAIL FROM:<a@origin.test>", "250 2.1.0")
        orcpt = "rfc822;" + "o" * 486 + "@d.test"
        line = f"RCPT TO:<{'r' * 64}@{'d' * 60}.destination.test> NOTIFY=SUCCESS,FAILURE,DELAY ORCPT={orcpt}"
        self.assertGreater(len(line) + 2, 600)
        self.assertLessEqual(len(line) + 2, 1000)
        self.expect(c, line, "250 2.1.5")

    def test_command_over_512_then_session_continues(self):
        c = self.conn()
        c.ehlo()
        self.expect(c, "NOOP " + "y" * 505, "250 2.0.0")   # exactly 512 octets with CRLF
        self.expect(c, "NOOP " + "y" * 506, "500 5.5.2")   # 513
        self.expect(c, "MAIL FROM:<a@origin.test>", "250 2.1.0")

    def test_foreign_client_relaying_denied_smtplib(self):
        with smtplib.SMTP("127.0.0.1", self.server.port, local_hostname="py.client.test", timeout=10,
                          source_address=("127.0.0.9", 0)) as c:
            c.ehlo()
            self.assertEqual(c.mail("a@origin.test")[0], 250)
            code, text = c.rcpt("b@destination.test")
        self.assertEqual(code, 550)
        self.assertTrue(text.startswith(b"5.7.1"), text)
        self.assertEqual(self.server.queue_list(), [])

    def test_helo_session_rejects_extension_parameters(self):
        c = self.conn()
        self.assertEqual(c.command("HELO client.test").code, 250)
        self.expect(c, "MAIL FROM:<a@origin.test> SIZE=100", "555 5.5.4")
        self.expect(c, "MAIL FROM:<a@origin.test> BODY=8BITMIME", "555 5.5.4")
        self.expect(c, "MAIL FROM:<a@origin.test> RET=FULL", "555 5.5.4")
        self.expect(c, "MAIL FROM:<a@origin.test>", "250 2.1.0")
        self.expect(c, "RCPT TO:<b@destination.test> NOTIFY=SUCCESS", "555 5.5.4")
        self.expect(c, "RCPT TO:<b@destination.test>", "250 2.1.5")
        self.expect(c, "DATA", "354")
        c.send(dot_stuff(MESSAGE))
        qid = queued_id(c.reply())
        (env,) = self.server.queue_list()
        self.assertEqual(env["id"], qid)
        self.assertEqual(env["client"]["protocol"], "SMTP")

    def test_size_at_the_limit_is_accepted(self):
        c = self.conn()
        c.ehlo()
        self.expect(c, "MAIL FROM:<a@origin.test> SIZE=10240", "250 2.1.0")


class PipeliningTests(ProtocolTestCase):
    def test_replies_come_in_order(self):
        c = self.conn()
        c.ehlo()
        c.send(b"MAIL FROM:<a@origin.test>\r\nRCPT TO:<b@destination.test>\r\nRCPT TO:<Postmaster>\r\n"
               b"RCPT TO:<c@destination.test>\r\nDATA\r\n")
        heads = [r.head for r in c.replies(5)]
        self.assertEqual(heads, ["250 2.1.0", "250 2.1.5", "550 5.1.1", "250 2.1.5", "354"])
        c.send(dot_stuff(MESSAGE) + b"NOOP\r\nQUIT\r\n")
        r = c.reply()
        qid = queued_id(r)
        self.assertEqual([r.head for r in c.replies(2)], ["250 2.0.0", "221 2.0.0"])
        c.expect_eof()
        (env,) = self.server.queue_list()
        self.assertEqual(env["id"], qid)
        self.assertEqual([x["address"] for x in env["recipients"]], ["b@destination.test", "c@destination.test"])

    def test_whole_session_in_one_send(self):
        c = self.conn()
        c.send(b"EHLO client.test\r\nMAIL FROM:<a@origin.test>\r\nRCPT TO:<b@destination.test>\r\nDATA\r\n"
               + dot_stuff(MESSAGE)
               + b"MAIL FROM:<a2@origin.test>\r\nRCPT TO:<b2@destination.test>\r\nDATA\r\n"
               + dot_stuff(MESSAGE) + b"QUIT\r\n")
        replies = c.all_replies_until_eof()
        heads = [r.head for r in replies]
        self.assertEqual(heads, ["250", "250 2.1.0", "250 2.1.5", "354", "250 2.0.0",
                                 "250 2.1.0", "250 2.1.5", "354", "250 2.0.0", "221 2.0.0"])
        ids = [queued_id(replies[4]), queued_id(replies[8])]
        self.assertNotEqual(ids[0], ids[1])
        listed = {e["id"]: e for e in self.server.queue_list()}
        self.assertEqual(set(listed), set(ids))
        self.assertEqual(listed[ids[0]]["sender"], "a@origin.test")
        self.assertEqual(listed[ids[1]]["sender"], "a2@origin.test")


class EnvelopeTests(ProtocolTestCase):
    def send(self, mail_line, rcpt_lines, c=None):
        c = c or self.conn()
        c.ehlo()
        self.expect(c, mail_line, "250 2.1.0")
        for line in rcpt_lines:
            self.expect(c, line, "250 2.1.5")
        self.expect(c, "DATA", "354")
        c.send(dot_stuff(MESSAGE))
        qid = queued_id(c.reply())
        listed = [e for e in self.server.queue_list() if e["id"] == qid]
        self.assertEqual(len(listed), 1)
        return listed[0]

    def test_dsn_parameters_are_stored(self):
        env = self.send("MAIL FROM:<a@origin.test> RET=HDRS ENVID=QQ+2Bid-42",
                        ["RCPT TO:<b@destination.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b+40original.test",
                         "RCPT TO:<c@destination.test> NOTIFY=NEVER",
                         "RCPT TO:<d@destination.test>"])
        self.assertEqual(env["ret"], "HDRS")
        self.assertEqual(env["envid"], "QQ+id-42")
        r = env["recipients"]
        self.assertEqual([x["address"] for x in r], ["b@destination.test", "c@destination.test", "d@destination.test"])
        self.assertEqual(sorted(r[0]["notify"]), ["FAILURE", "SUCCESS"])
        self.assertEqual(r[0]["orcpt"], "rfc822;b@original.test")
        self.assertEqual(r[1]["notify"], ["NEVER"])
        self.assertNotIn("orcpt", r[1])
        self.assertNotIn("notify", r[2])

    def test_ret_full_and_body(self):
        env = self.send("MAIL FROM:<a@origin.test> RET=FULL BODY=8BITMIME SIZE=500", ["RCPT TO:<b@destination.test>"])
        self.assertEqual(env["ret"], "FULL")
        self.assertEqual(env["body"], "8BITMIME")
        self.assertNotIn("envid", env)

    def test_smtputf8_addresses(self):
        sender = "j\u00fcrgen@m\u00fcnchen.test"
        rcpt = "\u03b4\u03bf\u03ba\u03b9\u03bc\u03ae@\u03c0\u03b1\u03c1\u03ac\u03b4\u03b5\u03b9\u03b3\u03bc\u03b1.test"
        env = self.send(f"MAIL FROM:<{sender}> SMTPUTF8", [f"RCPT TO:<{rcpt}>"])
        self.assertTrue(env["smtputf8"])
        self.assertEqual(env["sender"], sender)
        self.assertEqual([x["address"] for x in env["recipients"]], [rcpt])
        self.assertEqual(env["client"]["protocol"], "UTF8SMTP")

    def test_ascii_transaction_is_not_smtputf8(self):
        env = self.send("MAIL FROM:<a@origin.test>", ["RCPT TO:<b@destination.test>"])
        self.assertFalse(env["smtputf8"])
        self.assertEqual(env["client"]["protocol"], "ESMTP")

    def test_own_address_literals_refused(self):
        # Relaygate has no mailboxes: a recipient at one of its own addresses is refused at RCPT,
        # never accepted and bounced later; a literal of another host is relayed like a domain.
        c = self.conn()
        c.ehlo()
        self.expect(c, "MAIL FROM:<a@origin.test>", "250 2.1.0")
        for r in ["user@[127.0.0.1]", "user@[IPv6:::1]"]:
            self.expect(c, f"RCPT TO:<{r}>", "550 5.1.1")
        self.expect(c, "RCPT TO:<user@[192.0.2.1]>", "250 2.1.5")

    def test_address_forms_kept(self):
        rcpts = [
            ('"john smith"@destination.test', '"john smith"@destination.test'),
            ("user@[192.0.2.1]", "user@[192.0.2.1]"),
            ("user@[IPv6:2001:db8::1]", "user@[IPv6:2001:db8::1]"),
            ("@a.test,@b.test:user@c.test", "user@c.test"),
            ("a%b@c.test", "a%b@c.test"),
            ("host!user@c.test", "host!user@c.test"),
        ]
        env = self.send("MAIL FROM:<\"odd sender\"@origin.test>", [f"RCPT TO:<{r}>" for r, _ in rcpts])
        self.assertEqual(env["sender"], '"odd sender"@origin.test')
        self.assertEqual([x["address"] for x in env["recipients"]], [want for _, want in rcpts])

    def test_source_route_in_sender(self):
        env = self.send("MAIL FROM:<@hop.test:a@origin.test>", ["RCPT TO:<b@destination.test>"])
        self.assertEqual(env["sender"], "a@origin.test")

    def test_null_sender(self):
        env = self.send("MAIL FROM:<>", ["RCPT TO:<b@destination.test>"])
        self.assertEqual(env["sender"], "")
        show = self.server.queue_list()
        self.assertEqual([e["sender"] for e in show], [""])


if __name__ == "__main__":
    unittest.main()
