"""Hostile clients on raw sockets: SMTP smuggling, overlong lines, junk floods, NUL bytes, early
talkers, slow clients, error floods, session, recipient, size and hop limits."""

import time
import unittest

from harness import Server, dot_stuff, has_bare_cr_or_lf, queued_id, split_received

SMUGGLED = (b"MAIL FROM:<evil@x>\r\nRCPT TO:<victim@y>\r\nDATA\r\n"
            b"Subject: smuggled\r\n\r\nsmuggled\r\n.\r\n")
SEQUENCES = {
    "LF.LF": b"\n.\n",
    "CRLF.CR": b"\r\n.\r",
    "LF.CRLF": b"\n.\r\n",
    "CR.CRLF": b"\r.\r\n",
}
FIRST = b"Subject: first\r\n\r\nfirst message"


def smuggling_payload(seq):
    return FIRST + seq + SMUGGLED + b"\r\n.\r\n"


class SmugglingTests(unittest.TestCase):
    def open_data(self, s):
        c = s.connect()
        c.ehlo()
        c.send(b"MAIL FROM:<good@origin.test>\r\nRCPT TO:<rcpt@destination.test>\r\nDATA\r\n")
        self.assertEqual([r.head for r in c.replies(3)], ["250 2.1.0", "250 2.1.5", "354"])
        return c

    def assert_one_refusal(self, c, name):
        """Everything after 354: exactly one final reply for the DATA (554 5.5.2), nothing accepted."""
        replies = c.all_replies_until_eof()
        heads = [r.head for r in replies]
        self.assertGreaterEqual(len(replies), 2, f"{name}: {heads}")
        self.assertEqual(heads[0], "554 5.5.2", f"{name}: {heads}")
        self.assertEqual(heads[-1], "221 2.0.0", f"{name}: {heads}")
        # The smuggled MAIL/RCPT/DATA must never have been seen as commands.
        self.assertFalse([h for h in heads[1:-1] if h.startswith(("2", "3"))], f"{name}: {heads}")
        self.assertEqual(heads.count("554 5.5.2"), 1, f"{name}: {heads}")
        self.assertTrue(all(h.startswith("5") for h in heads[1:-1]), f"{name}: {heads}")

    def assert_nothing_smuggled(self, s, name):
        files = s.queue_files()
        for qid, (env, message) in files.items():
            self.assertNotEqual(env["sender"], "evil@x", f"{name}: smuggled envelope {qid}")
            self.assertNotIn("victim@y", [r["address"] for r in env["recipients"]], name)
            self.assertFalse(has_bare_cr_or_lf(message), f"{name}: bare CR/LF in {qid}: {message!r}")
        for qid in s.dir_entries("queue"):
            with open(f"{s.spool}/queue/{qid}", "rb") as f:
                self.assertNotIn(b"smuggled", f.read(), f"{name}: {qid}")
        self.assertFalse([e for e in s.logs("accepted") if e.get("from") == "<evil@x>"], name)

    def run_sequences(self, s, piecewise=False):
        for name, seq in SEQUENCES.items():
            with self.subTest(name, piecewise=piecewise):
                c = self.open_data(s)
                payload = smuggling_payload(seq) + b"QUIT\r\n"
                if piecewise:
                    for i in range(len(payload)):
                        c.send(payload[i:i + 1])
                else:
                    c.send(payload)
                self.assert_one_refusal(c, name)
                self.assert_nothing_smuggled(s, name)

    def test_strict_smuggling_sequences_refused(self):
        s = Server(self)
        self.run_sequences(s)
        self.assertEqual(s.dir_entries("queue"), [])

    def test_strict_smuggling_sequences_refused_byte_by_byte(self):
        s = Server(self)
        self.run_sequences(s, piecewise=True)
        self.assertEqual(s.dir_entries("queue"), [])

    def test_normalizing_smuggling_sequences_refused(self):
        s = Server(self, smtp={"normalize-bare-lf": "127.0.0.1/32"})
        self.run_sequences(s)
        self.assertEqual(s.dir_entries("queue"), [])

    def test_normalizing_turns_bare_lf_into_crlf(self):
        s = Server(self, smtp={"normalize-bare-lf": "127.0.0.1/32"})
        c = self.open_data(s)
        c.send(b"Subject: lf\n\nline one\nline two\r\n.\r\n")
        qid = queued_id(c.reply())
        env, message = s.queue_files()[qid]
        self.assertFalse(has_bare_cr_or_lf(message), message)
        _, body = split_received(message)
        self.assertEqual(body, b"Subject: lf\r\n\r\nline one\r\nline two\r\n")

    def test_strict_refuses_bare_lf_in_data(self):
        s = Server(self)
        c = self.open_data(s)
        c.send(b"Subject: lf\n\nline one\nline two\r\n.\r\n")
        self.assertEqual(c.reply().head, "554 5.5.2")
        self.assertEqual(c.command("NOOP").head, "250 2.0.0")
        self.assertEqual(s.dir_entries("queue"), [])

    def test_bare_cr_in_data_refused_in_both_modes(self):
        for smtp in (None, {"normalize-bare-lf": "127.0.0.1/32"}):
            with self.subTest(smtp=smtp):
                s = Server(self, smtp=smtp)
                c = self.open_data(s)
                c.send(b"Subject: cr\r\n\r\nbefore\rafter\r\n.\r\n")
                self.assertEqual(c.reply().head, "554 5.5.2")
                self.assertEqual(s.dir_entries("queue"), [])


class LineLimitTests(unittest.TestCase):
    def test_overlong_command_line_one_error_then_usable(self):
        s = Server(self)
        c = s.connect()
        c.ehlo()
        c.send(b"NOOP " + b"z" * 5000 + b"\r\nNOOP\r\n")
        self.assertEqual([r.head for r in c.replies(2)], ["500 5.5.2", "250 2.0.0"])
        self.assertEqual(c.command("MAIL FROM:<a@origin.test>").head, "250 2.1.0")

    def test_100k_line_without_lf_one_error_then_usable(self):
        s = Server(self)
        c = s.connect()
        c.ehlo()
        chunk = b"q" * 4096
        for _ in range(25):
            c.send(chunk)
        c.send(b"\r\nNOOP\r\n")
        self.assertEqual([r.head for r in c.replies(2)], ["500 5.5.2", "250 2.0.0"])
        self.assertTrue(c.silent_for(0.2), "more replies than one per overlong line")
        self.assertEqual(c.command("RSET").head, "250 2.0.0")

    def flood(self, c, total, chunk=65536):
        data = b"j" * chunk
        deadline = time.monotonic() + 30
        sent = 0
        for _ in range(total // chunk):
            c.send(data)
            sent += chunk
            if time.monotonic() > deadline:
                raise AssertionError(f"flood too slow: {sent} octets in 30 s")
        return sent

    def test_memory_bounded_under_junk_without_newlines(self):
        s = Server(self)
        c = s.connect()
        c.ehlo()
        before = s.rss_kib()
        self.flood(c, 20 * 1024 * 1024)
        c.send(b"\r\nNOOP\r\n")
        self.assertEqual([r.head for r in c.replies(2, timeout=30)], ["500 5.5.2", "250 2.0.0"])
        after = s.rss_kib()
        self.assertLess(after - before, 10 * 1024, f"VmRSS grew from {before} KiB to {after} KiB")

    def test_memory_bounded_under_junk_in_data(self):
        s = Server(self)
        c = s.connect()
        c.ehlo()
        c.send(b"MAIL FROM:<a@origin.test>\r\nRCPT TO:<b@destination.test>\r\nDATA\r\n")
        self.assertEqual([r.head for r in c.replies(3)], ["250 2.1.0", "250 2.1.5", "354"])
        before = s.rss_kib()
        self.flood(c, 20 * 1024 * 1024)
        c.send(b"\r\n.\r\n")
        self.assertEqual(c.reply(timeout=30).head, "500 5.5.2")
        after = s.rss_kib()
        self.assertLess(after - before, 10 * 1024, f"VmRSS grew from {before} KiB to {after} KiB")
        self.assertEqual(s.dir_entries("queue"), [])

    def test_text_line_over_1000_refused_at_end_of_data(self):
        s = Server(self)
        c = s.connect()
        c.ehlo()
        ok = c.send_message("a@origin.test", ["b@destination.test"],
                            b"Subject: long\r\n\r\n" + b"L" * 998 + b"\r\n.\r\n", ehlo=False)
        qid = queued_id(ok)
        c.send(b"MAIL FROM:<a@origin.test>\r\nRCPT TO:<b@destination.test>\r\nDATA\r\n")
        self.assertEqual([r.head for r in c.replies(3)], ["250 2.1.0", "250 2.1.5", "354"])
        c.send(b"Subject: long\r\n\r\n" + b"L" * 999 + b"\r\nmore\r\n")
        self.assertTrue(c.silent_for(0.3), "refused before the end of DATA")
        c.send(b".\r\n")
        self.assertEqual(c.reply().head, "500 5.5.2")
        self.assertEqual(c.command("NOOP").head, "250 2.0.0")
        self.assertEqual(s.dir_entries("queue"), [qid])


class NulTests(unittest.TestCase):
    def test_nul_in_command(self):
        s = Server(self)
        c = s.connect()
        c.send(b"EHLO client\x00.test\r\n")
        self.assertEqual(c.reply().head, "500 5.5.2")
        c.send(b"MAIL FROM:<a@origin.test>\x00\r\n")
        self.assertEqual(c.reply().head, "500 5.5.2")
        c.ehlo()
        self.assertEqual(c.command("MAIL FROM:<a@origin.test>").head, "250 2.1.0")

    def test_nul_in_data(self):
        s = Server(self)
        c = s.connect()
        c.ehlo()
        c.send(b"MAIL FROM:<a@origin.test>\r\nRCPT TO:<b@destination.test>\r\nDATA\r\n")
        self.assertEqual([r.head for r in c.replies(3)], ["250 2.1.0", "250 2.1.5", "354"])
        c.send(b"Subject: nul\r\n\r\nbefore\x00after\r\n.\r\n")
        self.assertEqual(c.reply().head, "554 5.6.0")
        self.assertEqual(s.dir_entries("queue"), [])
        # The session stays in step: the next transaction works.
        r = c.send_message("a@origin.test", ["b@destination.test"], dot_stuff(b"Subject: ok\r\n\r\nok\r\n"),
                           ehlo=False)
        self.assertEqual(s.dir_entries("queue"), [queued_id(r)])


class TimingTests(unittest.TestCase):
    def test_early_talker_refused(self):
        s = Server(self, smtp={"greeting-delay": "300ms"})
        c = s.connect(greet=False)
        c.send(b"EHLO early.test\r\n")
        r = c.reply()
        self.assertEqual(r.head, "554 5.5.1", r)
        c.expect_eof()
        refusals = s.wait_for_log(lambda e: e.get("event") == "refuse" and e.get("code") == "554")
        self.assertEqual(refusals["status"], "5.5.1")

    def test_patient_client_greeted_after_delay(self):
        s = Server(self, smtp={"greeting-delay": "300ms"})
        t0 = time.monotonic()
        c = s.connect(greet=False)
        r = c.reply()
        elapsed = time.monotonic() - t0
        self.assertEqual(r.code, 220)
        self.assertGreaterEqual(elapsed, 0.25, "greeting came before the delay")
        self.assertLess(elapsed, 3.0)
        c.ehlo()

    def test_command_timeout(self):
        s = Server(self, limits={"command-timeout": "1s", "data-timeout": "10s"})
        c = s.connect()
        t0 = time.monotonic()
        r = c.reply(timeout=3.5)
        elapsed = time.monotonic() - t0
        self.assertEqual(r.head, "421 4.4.2", r)
        self.assertGreaterEqual(elapsed, 0.8)
        self.assertLess(elapsed, 3.0)
        c.expect_eof()

    def test_command_timeout_restarts_with_each_command(self):
        s = Server(self, limits={"command-timeout": "1s", "data-timeout": "10s"})
        c = s.connect()
        t0 = time.monotonic()
        for _ in range(3):
            time.sleep(0.6)
            self.assertEqual(c.command("NOOP").head, "250 2.0.0")
        self.assertGreater(time.monotonic() - t0, 1.5)
        r = c.reply(timeout=6)
        self.assertEqual(r.head, "421 4.4.2")
        c.expect_eof()

    def test_data_timeout(self):
        s = Server(self, limits={"command-timeout": "10s", "data-timeout": "1s"})
        c = s.connect()
        c.ehlo()
        c.send(b"MAIL FROM:<a@origin.test>\r\nRCPT TO:<b@destination.test>\r\nDATA\r\n")
        self.assertEqual([r.head for r in c.replies(3)], ["250 2.1.0", "250 2.1.5", "354"])
        c.send(b"Subject: slow\r\n\r\npart of a body\r\n")
        t0 = time.monotonic()
        r = c.reply(timeout=3.5)
        elapsed = time.monotonic() - t0
        self.assertEqual(r.head, "421 4.4.2", r)
        self.assertGreaterEqual(elapsed, 0.8)
        self.assertLess(elapsed, 3.0)
        c.expect_eof()
        self.assertEqual(s.dir_entries("queue"), [])


class ErrorLimitTests(unittest.TestCase):
    def test_ten_errors_close_the_session(self):
        s = Server(self, limits={"errors": "10"})
        c = s.connect()
        c.ehlo()
        bad = ["BOGUS", "RCPT TO:<b@destination.test>", "MAIL FROM:<nope>", "DATA", "EXPN x",
               "BOGUS 2", "MAIL FROM:<a@origin.test> FOO=1", "HELO", "XYZZY", "BOGUS 3"]
        heads = []
        for line in bad[:9]:
            r = c.command(line)
            self.assertEqual(r.code // 100, 5, r)
            heads.append(r.head)
        r = c.command(bad[9])
        self.assertEqual(r.head, "500 5.5.1")
        r = c.reply()
        self.assertEqual(r.head, "421 4.7.0", f"after {heads}: {r}")
        c.expect_eof()

    def test_nine_errors_do_not_close(self):
        s = Server(self, limits={"errors": "10"})
        c = s.connect()
        c.ehlo()
        for i in range(9):
            self.assertEqual(c.command(f"BOGUS {i}").head, "500 5.5.1")
        self.assertEqual(c.command("NOOP").head, "250 2.0.0")
        self.assertTrue(c.silent_for(0.2))


class SessionLimitTests(unittest.TestCase):
    def test_per_client_session_limit(self):
        s = Server(self, limits={"sessions-per-client": "2"})
        c1 = s.connect()
        s.connect()
        c3 = s.connect(greet=False)
        r = c3.reply()
        self.assertEqual(r.head, "421 4.7.0", r)
        c3.expect_eof()
        # Another client address is not held to this client's limit.
        other = s.connect(source="127.0.0.9")
        self.assertEqual(other.command("NOOP").head, "250 2.0.0")
        # Once a session ends, the client may connect again.
        c1.command("QUIT")
        c1.expect_eof()
        got = None
        deadline = time.monotonic() + 5
        for _ in range(50):
            c = s.connect(greet=False)
            got = c.reply()
            c.close()
            if got.code == 220 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        self.assertEqual(got.code, 220, got)
        log = s.wait_for_log(lambda e: e.get("event") == "refuse" and e.get("stage") == "connect")
        self.assertEqual((log["code"], log["status"]), ("421", "4.7.0"))

    def test_total_session_limit(self):
        s = Server(self, limits={"sessions": "2", "sessions-per-client": "10"})
        s.connect()
        s.connect(source="127.0.0.9")
        c = s.connect(source="127.0.0.10", greet=False)
        self.assertEqual(c.reply().head, "421 4.7.0")
        c.expect_eof()


class TransactionLimitTests(unittest.TestCase):
    def open_mail(self, s):
        c = s.connect()
        c.ehlo()
        self.assertEqual(c.command("MAIL FROM:<a@origin.test>").head, "250 2.1.0")
        return c

    def test_recipient_limit(self):
        s = Server(self, limits={"recipients": "3"})
        c = self.open_mail(s)
        for i in range(3):
            self.assertEqual(c.command(f"RCPT TO:<r{i}@destination.test>").head, "250 2.1.5")
        self.assertEqual(c.command("RCPT TO:<r3@destination.test>").head, "452 4.5.3")
        self.assertEqual(c.command("DATA").code, 354)
        c.send(dot_stuff(b"Subject: three\r\n\r\nthree\r\n"))
        qid = queued_id(c.reply())
        (env,) = s.queue_list()
        self.assertEqual(env["id"], qid)
        self.assertEqual([r["address"] for r in env["recipients"]],
                         ["r0@destination.test", "r1@destination.test", "r2@destination.test"])

    def test_declared_size_over_limit(self):
        s = Server(self, limits={"message-size": "10k"})
        c = s.connect()
        c.ehlo()
        self.assertEqual(c.command("MAIL FROM:<a@origin.test> SIZE=10241").head, "552 5.3.4")
        self.assertEqual(c.command("MAIL FROM:<a@origin.test> SIZE=10240").head, "250 2.1.0")

    def body_of(self, octets):
        head = b"Subject: size\r\n\r\n"
        line = b"s" * 98 + b"\r\n"
        body = head
        while len(body) + len(line) <= octets:
            body += line
        rest = octets - len(body)
        if rest:
            body += b"t" * (rest - 2) + b"\r\n"
        assert len(body) == octets
        return body

    def test_body_over_limit_refused_after_final_dot(self):
        s = Server(self, limits={"message-size": "10k"})
        c = self.open_mail(s)
        self.assertEqual(c.command("RCPT TO:<b@destination.test>").head, "250 2.1.5")
        self.assertEqual(c.command("DATA").code, 354)
        c.send(self.body_of(12 * 1024))
        self.assertTrue(c.silent_for(0.3), "refused before the final dot")
        c.send(b".\r\n")
        self.assertEqual(c.reply().head, "552 5.3.4")
        self.assertEqual(s.dir_entries("queue"), [])
        self.assertEqual(s.dir_entries("tmp"), [])
        self.assertEqual(c.command("NOOP").head, "250 2.0.0")

    def test_body_at_limit_accepted_one_over_refused(self):
        s = Server(self, limits={"message-size": "10k"})
        c = s.connect()
        c.ehlo()
        r = c.send_message("a@origin.test", ["b@destination.test"], dot_stuff(self.body_of(10240)), ehlo=False)
        qid = queued_id(r)
        r = c.send_message("a@origin.test", ["b@destination.test"], dot_stuff(self.body_of(10241)), ehlo=False)
        self.assertEqual(r.head, "552 5.3.4")
        self.assertEqual(s.dir_entries("queue"), [qid])

    def received_message(self, n):
        hops = b"".join(b"Received: from hop%d.test by hop%d.test; Thu, 1 Jan 2026 00:00:00 +0000\r\n" % (i, i + 1)
                        for i in range(n))
        return dot_stuff(hops + b"Subject: loop\r\n\r\nloop\r\n")

    def test_too_many_received_headers(self):
        s = Server(self)
        c = s.connect()
        c.ehlo()
        r = c.send_message("a@origin.test", ["b@destination.test"], self.received_message(31), ehlo=False)
        self.assertEqual(r.head, "554 5.4.6")
        self.assertEqual(s.dir_entries("queue"), [])
        r = c.send_message("a@origin.test", ["b@destination.test"], self.received_message(30), ehlo=False)
        self.assertEqual(s.dir_entries("queue"), [queued_id(r)])

    def test_received_in_body_does_not_count(self):
        s = Server(self)
        c = s.connect()
        c.ehlo()
        body = b"Subject: quoted\r\n\r\n" + b"Received: from quoted.test; Thu, 1 Jan 2026 00:00:00 +0000\r\n" * 40
        r = c.send_message("a@origin.test", ["b@destination.test"], dot_stuff(body), ehlo=False)
        self.assertEqual(s.dir_entries("queue"), [queued_id(r)])


if __name__ == "__main__":
    unittest.main()
