import Testing
@testable import SMTPProtocol

@Suite struct SASLTests {
    func b64(_ s: String) -> [UInt8] { Base64.encode(Array(s.utf8)) }

    @Test func base64RoundTripsAndIsStrict() {
        for s in ["", "a", "ab", "abc", "abcd", "\0alice\0secret", String(repeating: "x", count: 1000)] {
            #expect(Base64.decode(Base64.encode(Array(s.utf8))[...]) == Array(s.utf8))
        }
        for bad in ["YQ", "YQ=", "Y===", "YQ==YQ==", "YW=j", "a b=", "YW\u{0}j", "////=A=="] {
            #expect(Base64.decode(Array(bad.utf8)[...]) == nil, "\(bad)")
        }
        #expect(Base64.decode(Array("YWJj".utf8)[...]) == Array("abc".utf8))
    }

    @Test func plainParsesThreePartsOnly() {
        let (_, ok) = SASLExchange.start(.plain, initialResponse: b64("az\0alice\0pw"))
        #expect(ok == .done(Credentials(mechanism: .plain, authorizationID: "az", user: "alice", password: "pw")))
        for bad in ["alice\0pw", "a\0b\0c\0d", "nothing"] {
            if case .failed(.malformed) = SASLExchange.start(.plain, initialResponse: b64(bad)).1 {} else {
                Issue.record("\(bad) accepted")
            }
        }
        // "=" is an empty initial response: PLAIN then has nothing to parse.
        if case .failed(.malformed) = SASLExchange.start(.plain, initialResponse: Array("=".utf8)).1 {} else {
            Issue.record("empty PLAIN accepted")
        }
    }

    @Test func loginAsksForUserThenPassword() {
        var (x, step) = SASLExchange.start(.login, initialResponse: nil)
        #expect(step == .challenge(Array("Username:".utf8)))
        step = x.respond(b64("bob"))
        #expect(step == .challenge(Array("Password:".utf8)))
        step = x.respond(b64("pw"))
        #expect(step == .done(Credentials(mechanism: .login, user: "bob", password: "pw")))
        var (y, _) = SASLExchange.start(.login, initialResponse: nil)
        #expect(y.respond(Array("*".utf8)) == .failed(.cancelled))
    }

    @Test func credentialsNeverPrintThePassword() {
        let c = Credentials(mechanism: .plain, user: "alice", password: "hunter2")
        #expect(!"\(c)".contains("hunter2"))
        #expect(!String(reflecting: c).contains("hunter2"))
        var dumped = ""
        dump(c, to: &dumped)
        #expect(!dumped.contains("hunter2"))
    }
}

@Suite struct STARTTLSTests {
    var settings: SessionSettings {
        var s = SessionSettings(hostname: "mx.test")
        s.offerSTARTTLS = true
        return s
    }

    func replies(_ actions: [SessionAction]) -> [String] {
        actions.compactMap {
            switch $0 {
            case .reply(let r): return r.description
            case .refuse(let r): return r.reply.description
            case .startTLS(let n): return "<starttls \(n)>"
            default: return nil
            }
        }
    }

    /// CVE-2011-0411: commands pipelined after STARTTLS in plaintext are thrown away, never answered
    /// inside TLS.
    @Test func plaintextAfterStartTLSIsDiscarded() {
        var s = ServerSession(settings: settings)
        _ = s.start()
        _ = s.receive(Array("EHLO c.test\r\n".utf8)[...])
        let injected = "STARTTLS\r\nMAIL FROM:<evil@example.org>\r\nRCPT TO:<x@example.net>\r\n"
        let a = s.receive(Array(injected.utf8)[...])
        #expect(replies(a) == ["220 2.0.0 Ready to start TLS", "<starttls 55>"])
        #expect(s.tlsEstablished("TLSv1.3 with cipher TEST").isEmpty)
        // The session starts over: MAIL needs a new EHLO, and STARTTLS is gone from the list.
        #expect(replies(s.receive(Array("MAIL FROM:<a@example.org>\r\n".utf8)[...])) == ["503 5.5.1 Send HELO/EHLO first"])
        let ehlo = replies(s.receive(Array("EHLO c.test\r\n".utf8)[...]))
        #expect(ehlo.count == 1 && !ehlo[0].contains("STARTTLS"))
        #expect(replies(s.receive(Array("STARTTLS\r\n".utf8)[...])) == ["503 5.5.1 TLS already active"])
    }

    @Test func startTLSIsRefusedInATransactionAndWhereNotOffered() {
        var s = ServerSession(settings: settings)
        _ = s.start()
        _ = s.receive(Array("EHLO c.test\r\nMAIL FROM:<a@example.org>\r\n".utf8)[...])
        #expect(replies(s.receive(Array("STARTTLS\r\n".utf8)[...])) == ["503 5.5.1 STARTTLS not allowed during a mail transaction"])
        var plain = ServerSession(settings: SessionSettings(hostname: "mx.test"))
        _ = plain.start()
        #expect(replies(plain.receive(Array("STARTTLS\r\n".utf8)[...])) == ["502 5.5.1 Command not implemented"])
        #expect(replies(s.receive(Array("RSET\r\nSTARTTLS now\r\n".utf8)[...])).last == "501 5.5.4 No parameters allowed")
    }

    @Test func requiredTLSRefusesMailBeforeIt() {
        var settings = self.settings
        settings.requireTLS = true
        var s = ServerSession(settings: settings)
        _ = s.start()
        let r = replies(s.receive(Array("EHLO c.test\r\nMAIL FROM:<a@example.org>\r\n".utf8)[...]))
        #expect(r.last == "530 5.7.0 Must issue a STARTTLS command first")
    }
}
