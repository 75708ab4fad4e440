/// The sending side of one SMTP transaction (RFC 5321 3.3, 4.1; RFC 2920 PIPELINING, 1870 SIZE,
/// 6152 8BITMIME, 6531 SMTPUTF8, 3461 DSN, 3207 STARTTLS, 4954 AUTH) as a state machine: replies in,
/// actions out. The driver owns the socket, the TLS handshake and the message bytes.
public struct ClientSession: Sendable {
    public struct Settings: Sendable {
        /// Our name in EHLO/HELO.
        public var heloName: String
        public var tls: TLSRequirement
        /// Credentials for a smart host's AUTH PLAIN (over TLS only).
        public var credentials: (user: String, password: String)?
        /// After a transaction, stay connected (`.finished` without QUIT) so that `begin(_:)` can send
        /// the next message on the same connection.
        public var keepAlive: Bool
        public init(heloName: String, tls: TLSRequirement = .may, credentials: (user: String, password: String)? = nil,
                    keepAlive: Bool = false) {
            self.heloName = heloName; self.tls = tls; self.credentials = credentials; self.keepAlive = keepAlive
        }
    }

    public enum TLSRequirement: String, Sendable, Hashable {
        /// Never STARTTLS.
        case none
        /// STARTTLS whenever offered; plaintext where it is not.
        case may
        /// STARTTLS or no delivery (the driver checks the certificate where asked).
        case encrypt
    }

    public struct Message: Sendable {
        public struct Recipient: Sendable, Hashable {
            public var address: String
            public var notify: [String]?
            public var orcpt: String?
            public init(address: String, notify: [String]? = nil, orcpt: String? = nil) {
                self.address = address; self.notify = notify; self.orcpt = orcpt
            }
        }
        /// Reverse-path without brackets; "" for `<>`.
        public var sender: String
        public var recipients: [Recipient]
        public var size: Int
        public var eightBit: Bool
        public var smtpUTF8: Bool
        public var ret: String?
        public var envid: String?
        public init(sender: String, recipients: [Recipient], size: Int, eightBit: Bool = false, smtpUTF8: Bool = false,
                    ret: String? = nil, envid: String? = nil) {
            self.sender = sender; self.recipients = recipients; self.size = size; self.eightBit = eightBit
            self.smtpUTF8 = smtpUTF8; self.ret = ret; self.envid = envid
        }
    }

    /// What became of one recipient at this host.
    public enum RecipientResult: Sendable, Hashable {
        case delivered(String)
        case temporary(String)
        case permanent(String, EnhancedStatus?)
    }

    public enum Action: Sendable, Equatable {
        case send([UInt8])
        /// Run the TLS handshake, then call `tlsEstablished()` or `tlsFailed(_:)`.
        case startTLS
        /// Send the message data, dot-stuffed, ended by CRLF.CRLF (`DotStuffing.encode`).
        case sendMessage
        /// The session is over: close the connection.
        case finished(Outcome)
    }

    public enum Outcome: Sendable, Equatable {
        /// Every recipient has a result from this host.
        case results([RecipientResult])
        /// The host could not take the message (no connection-level decision about recipients):
        /// try the next host. `plaintextRetry`: a failed handshake where plaintext is allowed.
        case hostFailed(String, plaintextRetry: Bool)
    }

    enum State: Sendable, Equatable {
        case greeting, ehlo, helo, startTLS, handshake, auth, envelope, data, body, quit, done
        /// keepAlive: between transactions, ready for `begin(_:)`.
        case ready
        /// keepAlive: RSET before the next transaction (the last one ended before DATA).
        case rset
    }

    public let settings: Settings
    public private(set) var message: Message
    var state = State.greeting
    var extensions: [String: String] = [:]
    var tlsActive = false
    var results: [RecipientResult?]
    /// Replies still expected for the envelope: `nil` stands for MAIL, an index for that RCPT.
    var expected: [Int?] = []
    var mailAccepted = false
    var accepted: [Int] = []
    var outcome: Outcome?

    public init(settings: Settings, message: Message) {
        self.settings = settings
        self.message = message
        self.results = Array(repeating: nil, count: message.recipients.count)
    }

    public var isTLS: Bool { tlsActive }
    public var isDone: Bool { state == .done }
    /// keepAlive: the connection may carry another transaction.
    public var isReady: Bool { state == .ready }
    /// The MAIL of the last transaction was accepted and its DATA never completed: RSET first.
    var transactionOpen = false

    /// keepAlive: the next message on this connection.
    public mutating func begin(_ next: Message) -> [Action] {
        guard state == .ready else { return [] }
        message = next
        results = Array(repeating: nil, count: next.recipients.count)
        expected = []
        mailAccepted = false
        accepted = []
        outcome = nil
        pendingLines = []
        if transactionOpen {
            state = .rset
            return [.send(line("RSET"))]
        }
        return sendEnvelope()
    }

    /// keepAlive: close a connection that is ready; nothing more is expected.
    public mutating func quitNow() -> [Action] {
        state = .done
        return [.send(line("QUIT"))]
    }
    public var serverExtensions: [String: String] { extensions }

    // MARK: Events

    public mutating func received(_ r: ReplyParser.ServerReply) -> [Action] {
        switch state {
        case .greeting:
            guard r.klass == 2 else { return fail("greeting: \(r)") }
            return sendEHLO()
        case .ehlo:
            if r.klass != 2 {
                state = .helo
                return [.send(line("HELO \(settings.heloName)"))]
            }
            extensions = Self.parseExtensions(r.lines.dropFirst())
            return afterGreeting()
        case .helo:
            guard r.klass == 2 else { return fail("HELO: \(r)") }
            extensions = [:]
            return afterGreeting()
        case .startTLS:
            if r.code == 220 {
                state = .handshake
                return [.startTLS]
            }
            if settings.tls == .encrypt { return fail("STARTTLS refused: \(r)") }
            return afterTLSDecision()
        case .handshake:
            return fail("reply during the TLS handshake: \(r)")
        case .auth:
            guard r.code == 235 else { return fail("AUTH at the next hop: \(r)") }
            return sendEnvelope()
        case .envelope:
            return envelopeReply(r)
        case .data:
            guard r.code == 354 else {
                for i in accepted { results[i] = Self.result(r, prefix: "DATA") }
                return endTransaction()
            }
            state = .body
            return [.sendMessage]
        case .body:
            for i in accepted { results[i] = Self.result(r, prefix: "after end of data") }
            transactionOpen = false
            return endTransaction()
        case .quit:
            return finish()
        case .rset:
            guard r.klass == 2 else { return fail("RSET: \(r)") }
            transactionOpen = false
            return sendEnvelope()
        case .done, .ready:
            return []
        }
    }

    public mutating func tlsEstablished() -> [Action] {
        guard state == .handshake else { return [] }
        tlsActive = true
        extensions = [:]
        return sendEHLO()   // RFC 3207 4.2: forget what was learned before TLS
    }

    public mutating func tlsFailed(_ reason: String) -> [Action] {
        guard state == .handshake else { return [] }
        return [.finished(record(.hostFailed("TLS handshake: \(reason)", plaintextRetry: settings.tls == .may)))]
    }

    /// The connection broke or timed out: what was not decided yet is temporary (for the recipients
    /// this host had accepted) or the host failed (before any recipient was accepted).
    public mutating func connectionLost(_ reason: String) -> Outcome {
        if let outcome { return outcome }
        if state == .quit { return finishOutcome() }
        state = .done
        if accepted.isEmpty && results.allSatisfy({ $0 == nil }) {
            return record(.hostFailed(reason, plaintextRetry: false))
        }
        for i in results.indices where results[i] == nil { results[i] = .temporary(reason) }
        return record(.results(results.map { $0! }))
    }

    // MARK: Steps

    mutating func sendEHLO() -> [Action] {
        state = .ehlo
        return [.send(line("EHLO \(settings.heloName)"))]
    }

    mutating func afterGreeting() -> [Action] {
        if !tlsActive && settings.tls != .none && extensions["STARTTLS"] != nil {
            state = .startTLS
            return [.send(line("STARTTLS"))]
        }
        if !tlsActive && settings.tls == .encrypt { return fail("TLS is required but the server does not offer STARTTLS") }
        return afterTLSDecision()
    }

    mutating func afterTLSDecision() -> [Action] {
        if let c = settings.credentials {
            guard tlsActive else { return fail("credentials are sent over TLS only, and TLS is not up") }
            guard let mechs = extensions["AUTH"]?.uppercased().split(separator: " "), mechs.contains("PLAIN") else {
                return fail("the next hop does not offer AUTH PLAIN")
            }
            state = .auth
            let token = Base64.encode(Array("\0\(c.user)\0\(c.password)".utf8))
            return [.send(line("AUTH PLAIN " + String(decoding: token, as: UTF8.self)))]
        }
        return sendEnvelope()
    }

    /// MAIL and the RCPTs, in one write where PIPELINING is offered (RFC 2920 3.1: DATA waits for
    /// the replies, so a refused envelope never leaves a DATA in flight).
    mutating func sendEnvelope() -> [Action] {
        // What the next hop cannot take is decided here, for every recipient at once.
        if message.smtpUTF8 && extensions["SMTPUTF8"] == nil {
            return permanentForAll("the next hop does not support SMTPUTF8", EnhancedStatus(5, 6, 7))
        }
        if let limit = extensions["SIZE"].flatMap({ Int($0) }), limit > 0, message.size > limit {
            return permanentForAll("message size \(message.size) exceeds the next hop's limit \(limit)", EnhancedStatus(5, 3, 4))
        }
        state = .envelope
        let dsn = extensions["DSN"] != nil
        var mail = "MAIL FROM:<\(message.sender)>"
        if extensions["SIZE"] != nil { mail += " SIZE=\(message.size)" }
        if message.eightBit && extensions["8BITMIME"] != nil { mail += " BODY=8BITMIME" }
        if message.smtpUTF8 { mail += " SMTPUTF8" }
        if dsn, let ret = message.ret { mail += " RET=\(ret)" }
        if dsn, let envid = message.envid { mail += " ENVID=\(XText.encode(envid))" }
        var lines = [line(mail)]
        expected = [nil]
        for (i, r) in message.recipients.enumerated() {
            var rcpt = "RCPT TO:<\(r.address)>"
            if dsn, let n = r.notify, !n.isEmpty { rcpt += " NOTIFY=\(n.joined(separator: ","))" }
            if dsn, let o = r.orcpt, let semi = o.firstIndex(of: ";") {
                rcpt += " ORCPT=\(o[..<semi]);\(XText.encode(String(o[o.index(after: semi)...])))"
            }
            lines.append(line(rcpt))
            expected.append(i)
        }
        if extensions["PIPELINING"] != nil { return [.send(lines.flatMap { $0 })] }
        pendingLines = Array(lines.dropFirst())
        return [.send(lines[0])]
    }

    /// Without PIPELINING, the RCPT lines wait here for their turn.
    var pendingLines: [[UInt8]] = []

    mutating func envelopeReply(_ r: ReplyParser.ServerReply) -> [Action] {
        guard !expected.isEmpty else { return fail("unexpected reply \(r)") }
        let which = expected.removeFirst()
        if let i = which {
            if mailAccepted {
                if r.klass == 2 { accepted.append(i) } else { results[i] = Self.result(r, prefix: "RCPT") }
            }
        } else {
            mailAccepted = r.klass == 2
            transactionOpen = mailAccepted
            if !mailAccepted {
                if r.klass == 4 {
                    // A temporary refusal of the sender at this host: the next host may take it.
                    expected.removeAll()
                    pendingLines.removeAll()
                    return failAfterQuit("MAIL: \(r)")
                }
                for i in results.indices { results[i] = Self.result(r, prefix: "MAIL") }
            }
        }
        if !pendingLines.isEmpty && mailAccepted {
            return [.send(pendingLines.removeFirst())]
        }
        pendingLines.removeAll()
        guard expected.isEmpty else { return [] }
        if !mailAccepted || accepted.isEmpty { return endTransaction() }
        state = .data
        return [.send(line("DATA"))]
    }

    /// The transaction is over: with keepAlive the connection stays for the next one.
    mutating func endTransaction() -> [Action] {
        guard settings.keepAlive else { return quit() }
        state = .ready
        for i in results.indices where results[i] == nil { results[i] = .temporary("no reply for this recipient") }
        return [.finished(record(.results(results.map { $0! })))]
    }

    mutating func quit() -> [Action] {
        state = .quit
        return [.send(line("QUIT"))]
    }

    mutating func finish() -> [Action] {
        state = .done
        return [.finished(finishOutcome())]
    }

    mutating func finishOutcome() -> Outcome {
        if let outcome { return outcome }
        for i in results.indices where results[i] == nil { results[i] = .temporary("no reply for this recipient") }
        return record(.results(results.map { $0! }))
    }

    mutating func fail(_ why: String) -> [Action] {
        state = .done
        return [.send(line("QUIT")), .finished(record(.hostFailed(why, plaintextRetry: false)))]
    }

    mutating func failAfterQuit(_ why: String) -> [Action] {
        _ = record(.hostFailed(why, plaintextRetry: false))
        state = .quit
        return [.send(line("QUIT"))]
    }

    mutating func permanentForAll(_ why: String, _ status: EnhancedStatus) -> [Action] {
        for i in results.indices { results[i] = .permanent(why, status) }
        return endTransaction()
    }

    mutating func record(_ o: Outcome) -> Outcome {
        outcome = o
        return o
    }

    // MARK: Helpers

    func line(_ s: String) -> [UInt8] { Array(s.utf8) + [13, 10] }

    static func result(_ r: ReplyParser.ServerReply, prefix: String) -> RecipientResult {
        let text = "\(r.code) \(r.lines.joined(separator: " "))"
        switch r.klass {
        case 2: return .delivered(text)
        case 5: return .permanent(text, r.status)
        default: return .temporary(text)
        }
    }

    /// EHLO lines after the first: keyword and parameters (RFC 5321 4.1.1.1).
    static func parseExtensions(_ lines: ArraySlice<String>) -> [String: String] {
        var out: [String: String] = [:]
        for l in lines {
            let parts = l.split(separator: " ", maxSplits: 1)
            guard let k = parts.first else { continue }
            out[k.uppercased()] = parts.count > 1 ? String(parts[1]) : ""
        }
        return out
    }
}

/// The message data on the wire (RFC 5321 4.5.2): a leading dot doubled, CRLF.CRLF at the end.
public enum DotStuffing {
    public static func encode(_ data: ArraySlice<UInt8>) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(data.count + data.count / 64 + 5)
        var atLineStart = true
        for b in data {
            if atLineStart && b == UInt8(ascii: ".") { out.append(b) }
            out.append(b)
            atLineStart = b == 10
        }
        if !out.isEmpty && !(out.count >= 2 && out[out.count - 2] == 13 && out[out.count - 1] == 10) {
            out += [13, 10]
        }
        out += [UInt8(ascii: "."), 13, 10]
        return out
    }
}
