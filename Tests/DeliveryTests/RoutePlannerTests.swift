import DNS
import MailModel
import Testing
@testable import Delivery
@testable import Queue
import SMTPProtocol

/// A resolver with fixed answers.
struct FakeResolver: Resolver {
    var mxs: [String: DNSResult<MXRecord>] = [:]
    var hosts: [String: DNSResult<IPAddress>] = [:]
    func mx(_ domain: String) -> DNSResult<MXRecord> { mxs[domain] ?? .nxdomain }
    func addresses(_ host: String) -> DNSResult<IPAddress> { hosts[host] ?? .nxdomain }
    func tlsa(_ name: String) -> DNSResult<TLSARecord> { .noRecords(secure: false) }
}

func ip(_ s: String) -> IPAddress { IPAddress(s)! }

@Suite struct RoutePlannerTests {
    var dns: FakeResolver {
        var r = FakeResolver()
        r.mxs["backup.test"] = .records([MXRecord(preference: 10, exchange: "primary.test"), MXRecord(preference: 20, exchange: "relay.test"),
                                         MXRecord(preference: 30, exchange: "third.test")], secure: false)
        r.mxs["best.test"] = .records([MXRecord(preference: 5, exchange: "relay.test"), MXRecord(preference: 10, exchange: "other.test")], secure: false)
        r.mxs["byaddress.test"] = .records([MXRecord(preference: 1, exchange: "alias.test"), MXRecord(preference: 9, exchange: "other.test")], secure: false)
        r.mxs["lost.test"] = .records([MXRecord(preference: 10, exchange: "gone.test"), MXRecord(preference: 20, exchange: "relay.test")], secure: false)
        r.mxs["null.test"] = .records([MXRecord(preference: 0, exchange: "")], secure: false)
        r.mxs["implicit.test"] = .noRecords(secure: false)
        r.mxs["broken.test"] = .failure("SERVFAIL")
        r.mxs["equal.test"] = .records([MXRecord(preference: 10, exchange: "b.test"), MXRecord(preference: 10, exchange: "a.test"),
                                        MXRecord(preference: 5, exchange: "c.test")], secure: false)
        for (h, a) in [("primary.test", "127.0.0.10"), ("relay.test", "127.0.0.1"), ("third.test", "127.0.0.30"),
                       ("other.test", "127.0.0.11"), ("alias.test", "192.0.2.1"), ("implicit.test", "127.0.0.40"),
                       ("a.test", "127.0.0.51"), ("b.test", "127.0.0.52"), ("c.test", "127.0.0.53")] {
            r.hosts[h] = .records([ip(a)], secure: false)
        }
        return r
    }
    let planner = RoutePlanner(localNames: ["relay.test"], localAddresses: [ip("192.0.2.1")])

    @Test func backupDropsItselfAndWorse() {
        let (plan, trace) = planner.plan("backup.test", resolver: dns, shuffle: { $0 })
        #expect(plan == .hosts([MXHost(name: "primary.test", preference: 10, addresses: [ip("127.0.0.10")])]))
        #expect(trace.dropped.map(\.record.exchange) == ["relay.test", "third.test"])
    }

    @Test func bestMXIsALoopAndKnownByAddressToo() {
        #expect(planner.plan("best.test", resolver: dns).0 == .bounce(EnhancedStatus(5, 4, 6), "mail for best.test loops back to this host (it is the best MX)"))
        if case .bounce(let st, _) = planner.plan("byaddress.test", resolver: dns).0 { #expect(st == EnhancedStatus(5, 4, 6)) } else {
            Issue.record("an MX host with this host's address is this host")
        }
    }

    @Test func backupThatLostItsPrimaryDefers() {
        if case .deferred(let st, _) = planner.plan("lost.test", resolver: dns).0 { #expect(st == EnhancedStatus(4, 4, 4)) } else {
            Issue.record("a backup without a primary defers")
        }
    }

    @Test func nullMXImplicitMXNXDOMAINAndFailures() {
        #expect(planner.plan("null.test", resolver: dns).0 == .bounce(EnhancedStatus(5, 1, 10), "domain null.test accepts no mail (Null MX)"))
        #expect(planner.plan("implicit.test", resolver: dns).0 == .hosts([MXHost(name: "implicit.test", preference: 0, addresses: [ip("127.0.0.40")])]))
        if case .bounce(let st, _) = planner.plan("nowhere.test", resolver: dns).0 { #expect(st == EnhancedStatus(5, 1, 2)) } else { Issue.record("NXDOMAIN bounces") }
        if case .deferred(let st, _) = planner.plan("broken.test", resolver: dns).0 { #expect(st == EnhancedStatus(4, 4, 3)) } else { Issue.record("SERVFAIL defers") }
    }

    @Test func preferenceOrderWithEqualsShuffledOnlyAmongThemselves() {
        for _ in 0..<20 {
            guard case .hosts(let hs) = planner.plan("equal.test", resolver: dns).0 else { Issue.record("no hosts"); return }
            #expect(hs.first?.name == "c.test")
            #expect(Set(hs.dropFirst().map(\.name)) == ["a.test", "b.test"])
        }
    }

    @Test func routesLiteralsAndRewriting() {
        var t = RoutingTable()
        t.byDomain["routed.test"] = StaticRoute(target: .direct(host: "127.0.0.9", port: 2525), tls: .encrypt)
        t.fallback = StaticRoute(target: .mx("backup.test"))
        t.rewrites = ["old@a.test": "new@b.test", "@c.test": "@d.test"]
        #expect(planner.plan(domain: "routed.test", routes: t, resolver: dns).0
                == .hosts([MXHost(name: "127.0.0.9", preference: 0, addresses: [ip("127.0.0.9")], port: 2525)]))
        #expect(planner.plan(domain: "anything.test", routes: t, resolver: dns, shuffle: { $0 }).0
                == .hosts([MXHost(name: "primary.test", preference: 10, addresses: [ip("127.0.0.10")])]))
        #expect(planner.plan(domain: "[127.0.0.7]", routes: RoutingTable(), resolver: dns).0
                == .hosts([MXHost(name: "[127.0.0.7]", preference: 0, addresses: [ip("127.0.0.7")])]))
        if case .bounce(let st, _) = planner.plan(domain: "[192.0.2.1]", routes: RoutingTable(), resolver: dns).0 {
            #expect(st == EnhancedStatus(5, 4, 6))
        } else { Issue.record("a literal of this host loops") }
        #expect(t.rewrite("Old@A.test") == "new@b.test")
        #expect(t.rewrite("x@C.TEST") == "x@d.test")
        #expect(t.rewrite("x@e.test") == "x@e.test")
    }
}

@Suite struct QueueLogicTests {
    @Test func retryScheduleDoublesUpToTheMaximum() {
        let r = RetrySchedule()
        #expect((1...6).map { r.delay(afterAttempts: $0) } == [.seconds(300), .seconds(600), .seconds(1200), .seconds(2400), .seconds(3600), .seconds(3600)])
        #expect(!r.expired(received: 0, now: 5 * 86400 - 1))
        #expect(r.expired(received: 0, now: 5 * 86400))
    }

    @Test func deliveryStateFoldsLines() {
        var s = DeliveryState()
        s.apply(.init(rcpt: 0, result: .deferred, reply: "451"))
        s.apply(.init(rcpt: 1, result: .delivered, reply: "250"))
        s.apply(.init(rcpt: 0, result: .bounced, reply: "550"))
        s.apply(.init(rcpt: 1, result: .deferred, reply: "late"))   // a final outcome stays final
        s.apply(.init(attempts: 2, next: 99))
        #expect(s.pending(of: 3) == [2])
        #expect(s.final[1]?.reply == "250")
        #expect(s.lastDeferral.isEmpty && s.attempts == 2 && s.next == 99)
        s.apply(.init(flush: true))
        #expect(s.next == 0)
    }

    @Test func dsnIsAMultipartReportWithPerRecipientFields() {
        let original = Array("Received: x\r\nSubject: hi\r\n\r\nsecret body\r\n".utf8)
        let dsn = String(decoding: DSN.bounce(hostname: "relay.test", originalSender: "a@origin.test", queueID: "q1", envelopeID: "env1",
                                              received: 0, failures: [.init(recipient: "b@dest.test", orcpt: "rfc822;b@dest.test", status: "5.1.1",
                                                                            remoteHost: "mx.dest.test", diagnostic: "smtp; 550 5.1.1 no")],
                                              original: original[...], ret: nil, now: 86400, boundarySeed: "s"), as: UTF8.self)
        #expect(dsn.contains("Content-Type: multipart/report; report-type=delivery-status;"))
        #expect(dsn.contains("Reporting-MTA: dns; relay.test\r\n"))
        #expect(dsn.contains("Original-Envelope-Id: env1\r\n"))
        #expect(dsn.contains("Final-Recipient: rfc822; b@dest.test\r\nAction: failed\r\nStatus: 5.1.1\r\nRemote-MTA: dns; mx.dest.test\r\n"))
        #expect(dsn.contains("Date: Fri, 02 Jan 1970 00:00:00 +0000"))
        #expect(dsn.contains("Subject: hi") && !dsn.contains("secret body"))   // RET=HDRS by default
        #expect(!dsn.utf8.enumerated().contains { i, b in b == 10 && (i == 0 || Array(dsn.utf8)[i - 1] != 13) })
    }
}
