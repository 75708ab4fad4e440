import Testing
@testable import SMTPProtocol

/// The client state machine against scripted servers: replies in, lines out.
@Suite struct ClientSessionTests {
    typealias R = ReplyParser.ServerReply

    func reply(_ code: Int, _ lines: String...) -> R { R(code: code, lines: lines.isEmpty ? ["ok"] : lines) }

    func sent(_ actions: [ClientSession.Action]) -> [String] {
        actions.compactMap {
            switch $0 {
            case .send(let b): return String(decoding: b, as: UTF8.self)
            case .startTLS: return "<tls>"
            case .sendMessage: return "<message>"
            case .finished(let o): return "<finished \(o)>"
            }
        }
    }

    let message = ClientSession.Message(sender: "a@origin.test",
                                        recipients: [.init(address: "b@dest.test", notify: ["FAILURE"], orcpt: "rfc822;b@dest.test"),
                                                     .init(address: "c@dest.test")],
                                        size: 1000, eightBit: true, ret: "HDRS", envid: "e+1")

    @Test func pipelinedEnvelopeWithExtensionsThenData() {
        var s = ClientSession(settings: .init(heloName: "relay.test", tls: .may), message: message)
        #expect(sent(s.received(reply(220, "mx ESMTP"))) == ["EHLO relay.test\r\n"])
        let env = sent(s.received(reply(250, "mx", "PIPELINING", "SIZE 10000", "8BITMIME", "DSN")))
        #expect(env == ["MAIL FROM:<a@origin.test> SIZE=1000 BODY=8BITMIME RET=HDRS ENVID=e+2B1\r\n"
                        + "RCPT TO:<b@dest.test> NOTIFY=FAILURE ORCPT=rfc822;b@dest.test\r\nRCPT TO:<c@dest.test>\r\n"])
        #expect(s.received(reply(250)).isEmpty)
        #expect(s.received(reply(250)).isEmpty)
        #expect(sent(s.received(reply(550, "5.1.1 no such user"))) == ["DATA\r\n"])
        #expect(sent(s.received(reply(354, "go"))) == ["<message>"])
        #expect(sent(s.received(reply(250, "2.0.0 queued"))) == ["QUIT\r\n"])
        let done = s.received(reply(221))
        #expect(done == [.finished(.results([.delivered("250 2.0.0 queued"),
                                              .permanent("550 5.1.1 no such user", EnhancedStatus(5, 1, 1))]))])
    }

    @Test func withoutPipeliningOneCommandAtATimeAndHELOFallback() {
        var s = ClientSession(settings: .init(heloName: "relay.test", tls: .may), message: message)
        _ = s.received(reply(220))
        #expect(sent(s.received(reply(502, "5.5.1 no EHLO"))) == ["HELO relay.test\r\n"])
        #expect(sent(s.received(reply(250))) == ["MAIL FROM:<a@origin.test>\r\n"])
        #expect(sent(s.received(reply(250))) == ["RCPT TO:<b@dest.test>\r\n"])
        #expect(sent(s.received(reply(451, "4.3.0 try later"))) == ["RCPT TO:<c@dest.test>\r\n"])
        #expect(sent(s.received(reply(250))) == ["DATA\r\n"])
        _ = s.received(reply(354))
        _ = s.received(reply(452, "4.3.1 full"))
        #expect(s.received(reply(221)) == [.finished(.results([.temporary("451 4.3.0 try later"), .temporary("452 4.3.1 full")]))])
    }

    @Test func startTLSThenFreshEHLOAndEncryptRequirement() {
        var s = ClientSession(settings: .init(heloName: "relay.test", tls: .may), message: message)
        _ = s.received(reply(220))
        #expect(sent(s.received(reply(250, "mx", "STARTTLS"))) == ["STARTTLS\r\n"])
        #expect(sent(s.received(reply(220, "go ahead"))) == ["<tls>"])
        #expect(sent(s.tlsEstablished()) == ["EHLO relay.test\r\n"])
        #expect(sent(s.received(reply(250, "mx", "STARTTLS"))).first?.hasPrefix("MAIL FROM") == true)
        var e = ClientSession(settings: .init(heloName: "relay.test", tls: .encrypt), message: message)
        _ = e.received(reply(220))
        let out = e.received(reply(250, "mx"))
        #expect(out.last == .finished(.hostFailed("TLS is required but the server does not offer STARTTLS", plaintextRetry: false)))
        var f = ClientSession(settings: .init(heloName: "relay.test", tls: .may), message: message)
        _ = f.received(reply(220)); _ = f.received(reply(250, "mx", "STARTTLS")); _ = f.received(reply(220))
        #expect(f.tlsFailed("bad") == [.finished(.hostFailed("TLS handshake: bad", plaintextRetry: true))])
    }

    @Test func whatTheNextHopCannotTakeIsPermanentForAll() {
        var s = ClientSession(settings: .init(heloName: "r"), message: message)
        _ = s.received(reply(220))
        #expect(sent(s.received(reply(250, "mx", "SIZE 500"))) == ["QUIT\r\n"])
        if case .finished(.results(let rs)) = s.received(reply(221)).last {
            #expect(rs.allSatisfy { if case .permanent(_, let st) = $0 { return st == EnhancedStatus(5, 3, 4) } else { return false } })
        } else { Issue.record("no results") }
        var u = ClientSession(settings: .init(heloName: "r"), message: .init(sender: "", recipients: [.init(address: "ü@x.test")], size: 1, smtpUTF8: true))
        _ = u.received(reply(220)); _ = u.received(reply(250, "mx"))
        if case .finished(.results(let rs)) = u.received(reply(221)).last {
            #expect(rs == [.permanent("the next hop does not support SMTPUTF8", EnhancedStatus(5, 6, 7))])
        } else { Issue.record("no results") }
    }

    @Test func temporaryMailRefusalAndBadGreetingTryTheNextHost() {
        var s = ClientSession(settings: .init(heloName: "r"), message: message)
        #expect(s.received(reply(554, "go away")).last == .finished(.hostFailed("greeting: 554 go away", plaintextRetry: false)))
        var m = ClientSession(settings: .init(heloName: "r"), message: message)
        _ = m.received(reply(220)); _ = m.received(reply(250, "mx", "PIPELINING"))
        #expect(sent(m.received(reply(451, "4.7.1 greylisted"))) == ["QUIT\r\n"])
        #expect(m.received(reply(221)) == [.finished(.hostFailed("MAIL: 451 4.7.1 greylisted", plaintextRetry: false))])
    }

    @Test func connectionLostMidwayIsTemporaryForAcceptedRecipients() {
        var s = ClientSession(settings: .init(heloName: "r"), message: message)
        #expect(s.connectionLost("refused") == .hostFailed("refused", plaintextRetry: false))
        var t = ClientSession(settings: .init(heloName: "r"), message: message)
        _ = t.received(reply(220)); _ = t.received(reply(250, "mx", "PIPELINING"))
        _ = t.received(reply(250)); _ = t.received(reply(250)); _ = t.received(reply(550, "5.1.1 no"))
        _ = t.received(reply(354))
        #expect(t.connectionLost("reset") == .results([.temporary("reset"), .permanent("550 5.1.1 no", EnhancedStatus(5, 1, 1))]))
    }

    @Test func smartHostAuthOverTLSOnly() {
        var s = ClientSession(settings: .init(heloName: "r", tls: .encrypt, credentials: ("u", "p")), message: message)
        _ = s.received(reply(220)); _ = s.received(reply(250, "mx", "STARTTLS")); _ = s.received(reply(220))
        #expect(sent(s.tlsEstablished()) == ["EHLO r\r\n"])
        #expect(sent(s.received(reply(250, "mx", "AUTH LOGIN PLAIN"))) == ["AUTH PLAIN AHUAcA==\r\n"])
        #expect(sent(s.received(reply(235))).first?.hasPrefix("MAIL FROM") == true)
    }

    @Test func replyParserAndDotStuffing() throws {
        var p = ReplyParser()
        #expect(try p.feed(Array("250-mx\r\n250-PIPE".utf8)[...]).isEmpty)
        let rs = try p.feed(Array("LINING\r\n250 SIZE 10\r\n220 x\r\n".utf8)[...])
        #expect(rs == [R(code: 250, lines: ["mx", "PIPELINING", "SIZE 10"]), R(code: 220, lines: ["x"])])
        #expect(throws: ReplyParser.ParseError.self) { var q = ReplyParser(); _ = try q.feed(Array("hello\r\n".utf8)[...]) }
        #expect(throws: ReplyParser.ParseError.self) {
            var q = ReplyParser(maxLine: 100); _ = try q.feed(Array(String(repeating: "2", count: 200).utf8)[...])
        }
        #expect(DotStuffing.encode(Array(".a\r\nb\r\n..c\r\n".utf8)[...]) == Array("..a\r\nb\r\n...c\r\n.\r\n".utf8))
        #expect(DotStuffing.encode(Array("x".utf8)[...]) == Array("x\r\n.\r\n".utf8))
    }
}
