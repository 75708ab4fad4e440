"""The spool: exact message data, the Received header, the queue tools, durability across kill -9,
start-up recovery and a full disk."""

import email.utils
import json
import os
import re
import socket
import threading
import time
import unittest

from harness import (ConnectionClosed, ReplyTimeout, Server, dot_stuff, fill_disk, has_bare_cr_or_lf,
                     mount_tmpfs, parse_queue_file, queued_id, read_queue_dir, run_cli, split_received,
                     workdir)

BODY = b"Subject: queue test\r\n\r\nhello\r\n"


def send_one(test, s, body=BODY, sender="a@origin.test", rcpts=("b@destination.test",), helo="EHLO", c=None):
    c = c or s.connect()
    r = c.command(f"{helo} sender.client.test")
    test.assertEqual(r.code, 250)
    r = c.send_message(sender, list(rcpts), dot_stuff(body), ehlo=False)
    return queued_id(r)


class MessageDataTests(unittest.TestCase):
    def test_dot_stuffing_undone_exactly(self):
        s = Server(self)
        bodies = {
            "dot lines": b"Subject: dots\r\n\r\n.\r\n..\r\n.x\r\n....\r\nend.\r\n . \r\n\r\n.\r\nlast\r\n",
            "dot first line": b".leading\r\nSubject: first\r\n\r\nbody\r\n",
            "8-bit and tabs": b"Subject: bytes\r\n\r\n\xc3\xa9t\xc3\xa9\t\xff\xfe\x80\r\n\t.tab-dot\r\n",
            "empty": b"",
        }
        c = s.connect()
        c.ehlo("sender.client.test")
        for name, body in bodies.items():
            with self.subTest(name):
                wire = dot_stuff(body) if body else b".\r\n"
                r = c.send_message("a@origin.test", ["b@destination.test"], wire, ehlo=False,
                                   mail_params="BODY=8BITMIME")
                qid = queued_id(r)
                env, message = s.queue_files()[qid]
                _, rest = split_received(message)
                self.assertEqual(rest, body)
                self.assertEqual(env["size"], len(message))
                self.assertFalse(has_bare_cr_or_lf(message))

    def test_large_message_kept_byte_for_byte(self):
        s = Server(self)
        lines = [b"Subject: big"] + [b"" if i == 0 else (b"." * (i % 5)) + b"line %d " % i + b"x" * (i % 900)
                                     for i in range(2000)]
        body = b"\r\n".join(lines) + b"\r\n"
        qid = send_one(self, s, body)
        _, message = s.queue_files()[qid]
        self.assertEqual(split_received(message)[1], body)

    def received_fields(self, message):
        header, _ = split_received(message)
        self.assertTrue(header.endswith(b"\r\n"))
        self.assertFalse(has_bare_cr_or_lf(header))
        return re.sub(r"\r\n[ \t]+", " ", header.decode("ascii")).rstrip("\r\n")

    def assert_date(self, unfolded):
        self.assertIn(";", unfolded)
        date = unfolded.rsplit(";", 1)[1].strip()
        when = email.utils.parsedate_to_datetime(date)
        self.assertIsNotNone(when.tzinfo, date)
        self.assertLess(abs(when.timestamp() - time.time()), 300, date)

    def test_received_header_format(self):
        s = Server(self)
        qid = send_one(self, s)
        _, message = s.queue_files()[qid]
        h = self.received_fields(message)
        self.assertTrue(h.startswith("Received: from sender.client.test "), h)
        self.assertIn("([127.0.0.1])", h)
        self.assertRegex(h, r" by relay\.test\b")
        self.assertIn(f" with ESMTP id {qid}", h)
        self.assert_date(h)
        self.assertEqual(message.count(b"Received:"), 1)

    def test_received_header_after_helo_and_over_ipv6(self):
        s = Server(self, listeners=("127.0.0.1:0", "[::1]:0"))
        qid = send_one(self, s, helo="HELO")
        h = self.received_fields(s.queue_files()[qid][1])
        self.assertIn(f" with SMTP id {qid}", h)
        c6 = s.connect(family=socket.AF_INET6)
        qid6 = send_one(self, s, c=c6)
        h6 = self.received_fields(s.queue_files()[qid6][1])
        self.assertIn("([IPv6:::1])", h6)
        self.assertIn(f" with ESMTP id {qid6}", h6)
        self.assert_date(h6)


class QueueToolTests(unittest.TestCase):
    def test_queue_show(self):
        s = Server(self)
        qid = send_one(self, s, sender="alice@origin.test", rcpts=("bob@destination.test", "carol@destination.test"))
        r = run_cli(["queue", "show", qid, "--spool", s.spool])
        self.assertEqual(r.returncode, 0, r.stderr)
        out = r.stdout
        head, sep, message = out.partition(b"\n\n")
        self.assertTrue(sep, out)
        text = head.decode()
        self.assertIn(f"id: {qid}", text)
        self.assertIn("sender: <alice@origin.test>", text)
        self.assertIn("recipient: <bob@destination.test>", text)
        self.assertIn("recipient: <carol@destination.test>", text)
        _, stored = s.queue_files()[qid]
        self.assertEqual(message, stored)

    def test_queue_show_json_matches_list(self):
        s = Server(self)
        qid = send_one(self, s)
        r = run_cli(["queue", "show", qid, "--json", "--spool", s.spool])
        self.assertEqual(r.returncode, 0, r.stderr)
        shown = json.loads(r.stdout)
        (listed,) = s.queue_list()
        self.assertEqual(shown, listed)
        # The stored envelope, plus the delivery state: held, attempts, and each recipient's state.
        stored = s.queue_files()[qid][0]
        self.assertEqual((shown["held"], shown["attempts"]), (False, 0))
        self.assertEqual([r.pop("state") for r in shown["recipients"]], ["pending"])
        for key in ("held", "attempts"):
            shown.pop(key)
        self.assertEqual(shown, stored)

    def test_queue_show_unknown_id_fails(self):
        s = Server(self)
        send_one(self, s)
        r = run_cli(["queue", "show", "zzzzzzzzzzzzzzzz", "--spool", s.spool])
        self.assertNotEqual(r.returncode, 0)
        self.assertEqual(r.stdout, b"")
        self.assertTrue(r.stderr.strip())

    def test_queue_list_is_oldest_first(self):
        s = Server(self)
        c = s.connect()
        ids = [send_one(self, s, c=c) for _ in range(5)]
        self.assertEqual([e["id"] for e in s.queue_list()], ids)


class DurabilityTests(unittest.TestCase):
    def assert_queue_consistent(self, s):
        files = s.queue_files()
        for name, (env, message) in files.items():
            self.assertEqual(env["id"], name)
            self.assertEqual(env["size"], len(message), name)
            self.assertTrue(message.startswith(b"Received: "), name)
            self.assertFalse(has_bare_cr_or_lf(message), name)
            for key in ("received", "sender", "recipients", "smtputf8", "client"):
                self.assertIn(key, env, name)
        return files

    def test_kill9_after_50_messages_keeps_all(self):
        s = Server(self)
        c = s.connect()
        c.ehlo()
        ids = []
        for i in range(50):
            r = c.send_message(f"s{i}@origin.test", [f"r{i}@destination.test"],
                               dot_stuff(b"Subject: n%d\r\n\r\nmessage %d\r\n" % (i, i)), ehlo=False)
            ids.append(queued_id(r))
        s.kill9()
        s.start()
        rec = s.logs("recovered")
        self.assertEqual(len(rec), 1, s.log_text())
        self.assertEqual(rec[0]["queued"], "50")
        self.assertEqual(rec[0]["quarantined"], "0")
        listed = [e["id"] for e in s.queue_list()]
        self.assertEqual(sorted(listed), sorted(ids))
        self.assertEqual(len(set(listed)), 50)
        files = self.assert_queue_consistent(s)
        for i, qid in enumerate(ids):
            env, message = files[qid]
            self.assertEqual(env["sender"], f"s{i}@origin.test")
            self.assertEqual([r["address"] for r in env["recipients"]], [f"r{i}@destination.test"])
            self.assertTrue(message.endswith(b"message %d\r\n" % i))
        self.assertEqual(s.dir_entries("tmp"), [])

    def test_kill9_mid_flight_loses_no_acknowledged_message(self):
        s = Server(self)
        conns = [s.connect() for _ in range(8)]
        for c in conns:
            c.ehlo()
        acked = [[] for _ in conns]
        errors = []
        stop_at = time.monotonic() + 6.0

        def sender(i, c):
            try:
                for n in range(5000):
                    if time.monotonic() > stop_at:
                        return
                    c.send(b"MAIL FROM:<t%d@origin.test>\r\nRCPT TO:<n%d@destination.test>\r\nDATA\r\n" % (i, n))
                    heads = [r.head for r in c.replies(3)]
                    if heads != ["250 2.1.0", "250 2.1.5", "354"]:
                        errors.append((i, heads))
                        return
                    c.send(dot_stuff(b"Subject: t%d n%d\r\n\r\n" % (i, n) + b"x" * (n % 3000) + b"\r\n"))
                    r = c.reply()
                    acked[i].append(queued_id(r))
            except (ConnectionClosed, ReplyTimeout, OSError):
                return   # the server was killed

        threads = [threading.Thread(target=sender, args=(i, c), daemon=True) for i, c in enumerate(conns)]
        for t in threads:
            t.start()
        time.sleep(1.5)
        s.kill9()
        for t in threads:
            t.join(timeout=10)
        self.assertFalse([t for t in threads if t.is_alive()], "client threads did not finish")
        self.assertEqual(errors, [])
        all_acked = [q for a in acked for q in a]
        self.assertGreater(len(all_acked), 8, "too few messages acknowledged to test anything")
        self.assertEqual(len(set(all_acked)), len(all_acked), "an id was acknowledged twice")
        leftovers = s.dir_entries("tmp")

        s.start()
        rec = s.logs("recovered")
        self.assertEqual(len(rec), 1)
        self.assertEqual(rec[0]["removed_tmp"], str(len(leftovers)))
        self.assertEqual(s.dir_entries("tmp"), [])
        files = self.assert_queue_consistent(s)
        self.assertEqual(rec[0]["queued"], str(len(files)))
        missing = sorted(set(all_acked) - set(files))
        self.assertEqual(missing, [], f"{len(missing)} acknowledged messages lost")
        listed = [e["id"] for e in s.queue_list()]
        self.assertEqual(sorted(listed), sorted(files))

    def test_tmp_leftovers_removed_at_start_queue_kept(self):
        s = Server(self)
        qid = send_one(self, s)
        self.assertEqual(s.stop(), 0)
        tmp = os.path.join(s.spool, "tmp")
        with open(os.path.join(tmp, "k1r8aaaaaaaaaaaa"), "wb") as f:
            f.write(b"RELAYGATE-QUEUE 1\n{\"id\":\"k1r8aaaaaaaaaaaa\"")   # a write cut short
        with open(os.path.join(tmp, "partial.junk"), "wb") as f:
            f.write(b"junk")
        s.start()
        rec = s.logs("recovered")
        self.assertEqual(len(rec), 1)
        self.assertEqual(rec[0]["removed_tmp"], "2")
        self.assertEqual(rec[0]["queued"], "1")
        self.assertEqual(s.dir_entries("tmp"), [])
        self.assertEqual([e["id"] for e in s.queue_list()], [qid])

    def test_leftover_in_fresh_spool_removed(self):
        root = workdir(self)
        spool = os.path.join(root, "spool")
        for sub in ("tmp", "queue", "quarantine"):
            os.makedirs(os.path.join(spool, sub))
        with open(os.path.join(spool, "tmp", "leftover"), "wb") as f:
            f.write(b"RELAYGATE-QUEUE 1\n")
        s = Server(self, root=root, spool=spool)
        rec = s.logs("recovered")
        self.assertEqual((rec[0]["removed_tmp"], rec[0]["queued"]), ("1", "0"))
        self.assertEqual(s.dir_entries("tmp"), [])
        self.assertEqual(s.queue_list(), [])


class DiskFullTests(unittest.TestCase):
    def test_enospc_gives_452_and_leaves_nothing(self):
        root = workdir(self)
        spool = os.path.join(root, "spool")
        mount_tmpfs(self, spool, "256k")
        s = Server(self, root=root, spool=spool)
        c = s.connect()
        c.ehlo()
        first = c.send_message("a@origin.test", ["b@destination.test"], dot_stuff(BODY), ehlo=False)
        first_id = queued_id(first)

        filler = os.path.join(spool, "filler")
        fill_disk(filler)
        body = b"Subject: full\r\n\r\n" + (b"f" * 78 + b"\r\n") * 100
        r = c.send_message("a@origin.test", ["b@destination.test"], dot_stuff(body), ehlo=False)
        self.assertEqual(r.head, "452 4.3.1", r)
        self.assertEqual(s.dir_entries("tmp"), [])
        self.assertEqual(s.dir_entries("queue"), [first_id])
        for name in os.listdir(os.path.join(spool, "queue")):
            with open(os.path.join(spool, "queue", name), "rb") as f:
                parse_queue_file(f.read())

        # Space again: the same session can queue the message now.
        os.unlink(filler)
        r = c.send_message("a@origin.test", ["b@destination.test"], dot_stuff(body), ehlo=False)
        second = queued_id(r)
        self.assertEqual(sorted(s.dir_entries("queue")), sorted([first_id, second]))
        self.assertEqual(split_received(read_queue_dir(os.path.join(spool, "queue"))[second][1])[1], body)


if __name__ == "__main__":
    unittest.main()
