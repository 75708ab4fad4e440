"""Relaying with a real client (swaks): who may relay, what is queued, what the mail log says."""

import re
import smtplib
import subprocess
import unittest

from harness import Server, require_tool


def swaks(server_host, port, sender, recipient, local_interface=None, extra=()):
    args = [require_tool("swaks"), "--server", server_host, "--port", str(port), "--from", sender,
            "--to", recipient, "--helo", "swaks.client.test", "--timeout", "10",
            "--header", "Subject: relay test"]
    if local_interface:
        args += ["--local-interface", local_interface]
    args += list(extra)
    r = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
    return r.returncode, r.stdout.decode("utf-8", "replace")


QUEUED = re.compile(r"<-  250 2\.0\.0 OK queued as ([0-9a-z]{16})")


class RelayTests(unittest.TestCase):
    def test_loopback_client_relays_and_message_is_queued(self):
        s = Server(self)
        rc, out = swaks("127.0.0.1", s.port, "alice@origin.test", "bob@destination.test")
        self.assertEqual(rc, 0, out)
        ids = QUEUED.findall(out)
        self.assertEqual(len(ids), 1, out)
        listed = s.queue_list()
        self.assertEqual([e["id"] for e in listed], ids)
        env = listed[0]
        self.assertEqual(env["sender"], "alice@origin.test")
        self.assertEqual([r["address"] for r in env["recipients"]], ["bob@destination.test"])
        self.assertEqual(env["client"]["address"], "127.0.0.1")
        self.assertEqual(env["client"]["helo"], "swaks.client.test")

    def test_foreign_client_is_refused_and_nothing_is_queued(self):
        s = Server(self)
        rc, out = swaks("127.0.0.1", s.port, "alice@origin.test", "bob@destination.test",
                        local_interface="127.0.0.9")
        # swaks: 24 means no recipient was accepted.
        self.assertEqual(rc, 24, out)
        self.assertRegex(out, r"<\*\* 550 5\.7\.1 Relaying denied")
        self.assertNotIn("queued as", out)
        self.assertEqual(s.queue_list(), [])
        self.assertEqual(s.dir_entries("queue"), [])

    def smtplib_ipv6_send(self, port, sender, recipient):
        """Relays one message over ::1 with Python's smtplib (swaks needs IO::Socket::INET6 for IPv6)."""
        with smtplib.SMTP("::1", port, local_hostname="py.client.test", timeout=10) as c:
            c.ehlo()
            self.assertEqual(c.mail(sender)[0], 250)
            self.assertEqual(c.rcpt(recipient)[0], 250)
            code, text = c.data(b"Subject: relay test over IPv6\r\n\r\nhello\r\n")
        self.assertEqual(code, 250, text)
        m = re.match(rb"2\.0\.0 OK queued as ([0-9a-z]{16})$", text)
        self.assertIsNotNone(m, text)
        return m.group(1).decode()

    def test_ipv6_loopback_listener_relays(self):
        s = Server(self, listeners=("[::1]:0",))
        self.assertEqual([h for h, _ in s.addresses], ["::1"])
        qid = self.smtplib_ipv6_send(s.port6, "carol@origin.test", "dave@destination.test")
        listed = s.queue_list()
        self.assertEqual([e["id"] for e in listed], [qid])
        self.assertEqual(listed[0]["client"]["address"], "::1")
        self.assertEqual(listed[0]["sender"], "carol@origin.test")
        self.assertEqual([r["address"] for r in listed[0]["recipients"]], ["dave@destination.test"])

    def test_both_families_on_one_listener(self):
        s = Server(self, listeners=("127.0.0.1:0", "[::1]:0"))
        self.assertEqual(sorted(h for h, _ in s.addresses), ["127.0.0.1", "::1"])
        rc4, out4 = swaks("127.0.0.1", s.port, "a@origin.test", "b@destination.test")
        self.assertEqual(rc4, 0, out4)
        self.smtplib_ipv6_send(s.port6, "a@origin.test", "c@destination.test")
        self.assertEqual(sorted(e["client"]["address"] for e in s.queue_list()), ["127.0.0.1", "::1"])

    def test_mail_log_tells_the_story_of_each_session(self):
        s = Server(self)
        rc, out = swaks("127.0.0.1", s.port, "alice@origin.test", "bob@destination.test")
        self.assertEqual(rc, 0, out)
        (qid,) = QUEUED.findall(out)
        rc, out = swaks("127.0.0.1", s.port, "mallory@origin.test", "bob@destination.test",
                        local_interface="127.0.0.9")
        self.assertEqual(rc, 24, out)
        # The disconnect of the second session ends the story.
        s.wait_for_log(lambda e: e.get("event") == "disconnect" and e.get("client", "").startswith("127.0.0.9:"),
                       what="disconnect of the refused session")

        connects = s.logs("connect")
        self.assertEqual(len(connects), 2, s.log_text())
        good = next(e for e in connects if e["client"].startswith("127.0.0.1:"))
        bad = next(e for e in connects if e["client"].startswith("127.0.0.9:"))
        self.assertTrue(good.get("session"))
        self.assertTrue(bad.get("session"))
        self.assertNotEqual(good["session"], bad["session"])

        accepted = s.logs("accepted")
        self.assertEqual(len(accepted), 1, s.log_text())
        a = accepted[0]
        self.assertEqual(a["session"], good["session"])
        self.assertEqual(a["id"], qid)
        self.assertEqual(a["from"], "<alice@origin.test>")
        self.assertEqual(a["nrcpt"], "1")
        self.assertIn("bob@destination.test", a["rcpt"])
        self.assertGreater(int(a["size"]), 0)

        ehlos = {e["session"]: e for e in s.logs("ehlo")}
        self.assertEqual(set(ehlos), {good["session"], bad["session"]})
        self.assertEqual(ehlos[good["session"]]["name"], "swaks.client.test")

        rcpts = [e for e in s.logs("rcpt") if e.get("session") == good["session"]]
        self.assertEqual(len(rcpts), 1, s.log_text())
        self.assertEqual(rcpts[0]["verdict"], "relay")
        self.assertTrue(rcpts[0].get("rule"))

        refusals = [e for e in s.logs("refuse") if e.get("session") == bad["session"]]
        self.assertEqual(len(refusals), 1, s.log_text())
        r = refusals[0]
        self.assertEqual(r["stage"], "rcpt")
        self.assertEqual(r["code"], "550")
        self.assertEqual(r["status"], "5.7.1")
        self.assertIn("Relaying denied", r["reply"])
        self.assertTrue(r.get("reason"), "refuse line names no reason")
        self.assertFalse([e for e in s.logs("refuse") if e.get("session") == good["session"]])

        disconnects = {e["session"]: e for e in s.logs("disconnect")}
        self.assertEqual(set(disconnects), {good["session"], bad["session"]})
        self.assertEqual(disconnects[good["session"]]["messages"], "1")
        self.assertEqual(disconnects[good["session"]]["recipients"], "1")
        self.assertEqual(disconnects[good["session"]]["refusals"], "0")
        self.assertEqual(disconnects[bad["session"]]["messages"], "0")
        self.assertEqual(disconnects[bad["session"]]["refusals"], "1")
        self.assertRegex(disconnects[good["session"]]["duration"], r"^\d+ms$")


if __name__ == "__main__":
    unittest.main()
