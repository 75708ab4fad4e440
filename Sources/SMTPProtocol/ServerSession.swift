import MailModel

/// The receiving side of one SMTP connection as a state machine (RFC 5321, 2920, 1870, 6152, 6531,
/// 2034, 3461). It consumes bytes and events and returns `SessionAction`s; it never touches a socket.
/// Each command is first *checked* (is it allowed now, with these arguments?) and only then *proceeded*
/// with; every refusal goes through `refuse(_:)`.
public struct ServerSession: Sendable {
    enum Phase: Sendable {
        case notStarted
        case command
        case data(DataDecoder)
        case awaitingRecipientDecision(Recipient)
        case awaitingEnqueue
        case awaitingTLS
        /// Inside an AUTH exchange: lines are SASL responses, not commands.
        case authExchange(SASLExchange)
        case awaitingAuthentication(SASLMechanism)
        case closed
    }

    struct Greeting: Sendable {
        let name: String
        let extended: Bool
    }

    public let settings: SessionSettings
    var phase = Phase.notStarted
    var greeting: Greeting?
    var transaction: Envelope?
    var input = InputBuffer()
    var framer: CommandFramer
    var errors = 0
    var shutdownRequested = false
    /// Set by `tlsEstablished(_:)`: `TLSv1.3 with cipher ...`.
    public private(set) var tls: String?
    /// Set by a successful AUTH; the session keeps it until it ends (RFC 4954 4: no second AUTH).
    public private(set) var authenticatedUser: String?
    var senders = SenderOwnership()
    /// Bumped whenever a command or a DATA block completes; the driver resets its timer on change.
    public private(set) var progress = 0

    /// Input held while waiting on the driver beyond which the driver should stop reading.
    public static let inputHighWater = 64 * 1024

    public init(settings: SessionSettings) {
        self.settings = settings
        if settings.implicitTLS { tls = "TLS" }
        // Frame up to the longest verb's limit; `handle` then applies the limit of the verb it finds.
        self.framer = CommandFramer(maxLength: [Verb.mail, .rcpt, .auth].map { settings.lineLimit(for: $0) }.max()!,
                                    normalizeBareLF: settings.normalizeBareLF)
    }

    // MARK: Queries for the driver

    public var isClosed: Bool { if case .closed = phase { return true } else { return false } }
    public var wantsInput: Bool { !isClosed && input.count < Self.inputHighWater }
    public var timeout: SessionTimeout {
        switch phase {
        case .command, .awaitingTLS, .authExchange: return .command
        case .data: return .data
        case .notStarted, .awaitingRecipientDecision, .awaitingEnqueue, .awaitingAuthentication, .closed: return .none
        }
    }
    /// Between transactions with nothing pending: the moment a shutdown may close the session.
    public var isIdle: Bool {
        if case .command = phase, transaction == nil { return true }
        return false
    }

    // MARK: Events

    /// The greeting (RFC 5321 3.1). The driver calls this once, after any greeting delay.
    public mutating func start() -> [SessionAction] {
        guard case .notStarted = phase else { return [] }
        phase = .command
        var actions: [SessionAction] = [.reply(.greeting(settings.hostname))]
        actions += process()   // input that arrived in the same instant is handled in order
        return actions
    }

    /// The client sent data before the greeting: a protocol violation typical of spam engines.
    public mutating func clientSpokeEarly() -> [SessionAction] {
        var actions: [SessionAction] = []
        refuse(Refusal(stage: .connect, reply: .earlyTalker, reason: "client sent data before greeting"), &actions)
        close(&actions)
        return actions
    }

    public mutating func receive(_ bytes: ArraySlice<UInt8>) -> [SessionAction] {
        guard !isClosed else { return [] }
        input.append(bytes)
        if case .notStarted = phase { return [] }
        return process()
    }

    public mutating func recipientDecided(_ verdict: RecipientVerdict) -> [SessionAction] {
        guard case .awaitingRecipientDecision(let recipient) = phase else { return [] }
        phase = .command
        var actions: [SessionAction] = []
        switch verdict {
        case .accept(let rule):
            transaction?.recipients.append(recipient)
            actions.append(.log(.recipientAccepted(recipient, rule: rule)))
            actions.append(.reply(.recipientOK))
        case .refuse(let reply, let rule, let reason):
            refuse(Refusal(stage: .rcpt, reply: reply, reason: reason, rule: rule), &actions)
        }
        return actions + (isClosed ? [] : process())
    }

    public mutating func enqueueCompleted(_ result: EnqueueResult) -> [SessionAction] {
        guard case .awaitingEnqueue = phase else { return [] }
        phase = .command
        transaction = nil
        progress += 1
        var actions: [SessionAction] = []
        switch result {
        case .queued(let id):
            actions.append(.reply(.queued(id.text)))
        case .noSpace(let reason):
            refuse(Refusal(stage: .data, reply: .queueNoSpace, reason: reason, countsAsError: false), &actions)
        case .failed(let reason):
            refuse(Refusal(stage: .data, reply: .queueFailed, reason: reason, countsAsError: false), &actions)
        }
        if shutdownRequested && !isClosed && input.isEmpty {
            // The transaction that held the session open during a shutdown is done.
            actions.append(.reply(.shuttingDown))
            close(&actions)
        }
        return actions + (isClosed ? [] : process())
    }

    /// The answer to `.authenticate`.
    public mutating func authenticationFinished(_ result: AuthenticationResult) -> [SessionAction] {
        guard case .awaitingAuthentication(let mechanism) = phase else { return [] }
        phase = .command
        progress += 1
        var actions: [SessionAction] = []
        switch result {
        case .success(let user, let owned):
            authenticatedUser = user
            senders = owned
            actions.append(.log(.authenticated(user: user, mechanism: mechanism)))
            actions.append(.reply(.authSucceeded))
        case .rejected:
            refuse(Refusal(stage: .auth, reply: .authFailed, reason: "\(mechanism.rawValue) authentication failed"), &actions)
        case .unavailable:
            refuse(Refusal(stage: .auth, reply: .authUnavailable, reason: "authentication backend unavailable",
                           countsAsError: false), &actions)
        case .throttled:
            refuse(Refusal(stage: .auth, reply: .authThrottled, reason: "too many authentication failures",
                           countsAsError: false), &actions)
            close(&actions)
        }
        return actions + (isClosed ? [] : process())
    }

    /// The handshake that STARTTLS began is complete: a fresh session, waiting for EHLO (RFC 3207 4.2).
    public mutating func tlsEstablished(_ description: String) -> [SessionAction] {
        tls = description
        guard case .awaitingTLS = phase else { return [] }
        phase = .command
        return process()
    }

    public mutating func timedOut() -> [SessionAction] {
        guard !isClosed else { return [] }
        var actions: [SessionAction] = []
        let inData: Bool
        if case .data = phase { inData = true } else { inData = false }
        refuse(Refusal(stage: inData ? .data : .command, reply: inData ? .dataTimeout : .commandTimeout,
                       reason: inData ? "timeout in DATA" : "timeout waiting for command", countsAsError: false),
               &actions)
        close(&actions)
        return actions
    }

    /// Stop: an idle session is told 421 now; one in a transaction finishes it first.
    public mutating func beginShutdown() -> [SessionAction] {
        shutdownRequested = true
        guard isIdle, input.isEmpty else { return [] }
        var actions: [SessionAction] = [.reply(.shuttingDown)]
        close(&actions)
        return actions
    }

    // MARK: The loop

    mutating func process() -> [SessionAction] {
        var actions: [SessionAction] = []
        while true {
            switch phase {
            case .notStarted, .closed, .awaitingRecipientDecision, .awaitingEnqueue, .awaitingTLS, .awaitingAuthentication:
                return actions
            case .authExchange(var exchange):
                guard let frame = framer.next(&input) else { return actions }
                progress += 1
                switch frame {
                case .tooLong:
                    phase = .command
                    refuse(Refusal(stage: .auth, reply: .lineTooLong, reason: "SASL response too long"), &actions)
                case .bareLineFeed:
                    phase = .command
                    refuse(Refusal(stage: .auth, reply: .bareLineFeed, reason: "bare LF in SASL response"), &actions)
                case .line(let line, _):
                    saslStep(exchange.respond(line), exchange, &actions)
                }
            case .data(var decoder):
                if input.isEmpty { return actions }
                let (consumed, finished) = decoder.feed(input.bytes)
                input.consume(consumed)
                if finished {
                    finishData(decoder, &actions)
                } else {
                    phase = .data(decoder)
                    return actions
                }
            case .command:
                guard let frame = framer.next(&input) else { return actions }
                switch frame {
                case .tooLong:
                    actions.append(.log(.lineDiscarded(kind: "too long")))
                    refuse(Refusal(stage: .command, reply: .lineTooLong, reason: "command line too long"), &actions)
                case .bareLineFeed:
                    refuse(Refusal(stage: .command, reply: .bareLineFeed, reason: "bare LF in command"), &actions)
                case .line(let line, let crlf):
                    handle(line: line, crlf: crlf, &actions)
                }
                progress += 1
            }
        }
    }

    mutating func handle(line: [UInt8], crlf: Bool, _ actions: inout [SessionAction]) {
        if shutdownRequested && transaction == nil {
            actions.append(.reply(.shuttingDown))
            close(&actions)
            return
        }
        let command: Command
        switch CommandParser.parse(line[...]) {
        case .failure(let error):
            refuse(Refusal(stage: stage(ofLine: line), reply: error.reply, reason: "\(error)"), &actions)
            return
        case .success(let c):
            command = c
        }
        let verbLimit = settings.lineLimit(for: verb(of: command))
        if line.count + 2 > verbLimit {
            refuse(Refusal(stage: stage(ofLine: line), reply: .lineTooLong, reason: "command line over \(verbLimit) octets"),
                   &actions)
            return
        }

        switch command {
        case .ehlo(let name), .helo(let name):
            let extended: Bool
            if case .ehlo = command { extended = true } else { extended = false }
            // RFC 5321 4.1.4: a new EHLO/HELO resets any transaction.
            transaction = nil
            greeting = Greeting(name: name, extended: extended)
            actions.append(.log(.helo(name: name, extended: extended)))
            actions.append(.reply(extended ? .ehlo(settings.hostname, extensions: extensions) : .helo(settings.hostname)))

        case .mail(let sender, let params):
            if let refusal = checkMail(sender, params) {
                refuse(refusal, &actions)
                return
            }
            transaction = Envelope(sender: sender, declaredSize: params.size, body: params.body,
                                   smtpUTF8: params.smtpUTF8, dsnReturn: params.ret, envelopeID: params.envelopeID)
            actions.append(.log(.mailFrom(sender)))
            actions.append(.reply(.senderOK))

        case .rcpt(let path, let params):
            if let refusal = checkRcpt(path, params) {
                refuse(refusal, &actions)
                return
            }
            let recipient = Recipient(path: path, notify: params.notify, originalRecipient: params.originalRecipient)
            phase = .awaitingRecipientDecision(recipient)
            actions.append(.decideRecipient(RecipientRequest(sender: transaction!.sender, recipient: recipient,
                                                              heloName: greeting?.name)))

        case .data:
            guard let t = transaction else {
                refuse(Refusal(stage: .data, reply: .badSequence("Need MAIL command"), reason: "DATA without MAIL"), &actions)
                return
            }
            guard !t.recipients.isEmpty else {
                refuse(Refusal(stage: .data, reply: .noValidRecipients, reason: "DATA without accepted recipients"), &actions)
                return
            }
            phase = .data(DataDecoder(maxSize: settings.maxMessageSize, maxLineLength: settings.textLineLimit,
                                      normalizeBareLF: settings.normalizeBareLF,
                                      maxReceivedHeaders: settings.maxReceivedHeaders, commandEndedWithCRLF: crlf))
            actions.append(.reply(.startData))

        case .rset:
            transaction = nil
            actions.append(.reply(.ok))
        case .noop:
            actions.append(.reply(.ok))
        case .quit:
            actions.append(.reply(.bye))
            close(&actions)
        case .vrfy:
            actions.append(.reply(.vrfy))
        case .help:
            actions.append(.reply(.help))
        case .starttls:
            if let refusal = checkSTARTTLS() {
                refuse(refusal, &actions)
                return
            }
            // Nothing the client sent in plaintext after STARTTLS may be read as if it came over TLS.
            let discarded = input.count
            input.removeAll()
            greeting = nil
            transaction = nil
            phase = .awaitingTLS
            authenticatedUser = nil
            senders = SenderOwnership()
            actions.append(.reply(.readyForTLS))
            actions.append(.startTLS(discarded: discarded))
        case .auth(let name, let initial):
            if let refusal = checkAuth(name) {
                refuse(refusal, &actions)
                return
            }
            let (exchange, step) = SASLExchange.start(SASLMechanism(rawValue: name)!, initialResponse: initial)
            saslStep(step, exchange, &actions)
        case .notImplemented:
            refuse(Refusal(stage: .command, reply: .notImplemented, reason: "command not implemented"), &actions)
        }
    }

    // MARK: Checks (no state changes)

    func checkAuth(_ mechanism: String) -> Refusal? {
        guard !settings.authMechanisms.isEmpty else {
            return Refusal(stage: .auth, reply: .notImplemented, reason: "AUTH not offered on this listener")
        }
        guard greeting?.extended == true else {
            return Refusal(stage: .auth, reply: .badSequence("Send EHLO first"), reason: "AUTH before EHLO")
        }
        if authenticatedUser != nil {
            return Refusal(stage: .auth, reply: .authAlready, reason: "second AUTH")
        }
        if transaction != nil {
            return Refusal(stage: .auth, reply: .authInTransaction, reason: "AUTH inside a transaction")
        }
        if tls == nil && !settings.authWithoutTLS {
            return Refusal(stage: .auth, reply: .authNeedsTLS, reason: "AUTH before TLS")
        }
        guard let m = SASLMechanism(rawValue: mechanism), settings.authMechanisms.contains(m) else {
            return Refusal(stage: .auth, reply: .authUnknownMechanism, reason: "unknown mechanism \(mechanism.prefix(20))")
        }
        return nil
    }

    func checkSTARTTLS() -> Refusal? {
        if tls != nil {
            return Refusal(stage: .command, reply: .tlsAlreadyActive, reason: "STARTTLS on an encrypted session")
        }
        guard settings.offerSTARTTLS else {
            return Refusal(stage: .command, reply: .notImplemented, reason: "STARTTLS not offered on this listener")
        }
        if transaction != nil {
            return Refusal(stage: .command, reply: .tlsInTransaction, reason: "STARTTLS inside a transaction")
        }
        return nil
    }

    func checkMail(_ sender: ReversePath, _ p: MailParameters) -> Refusal? {
        guard let g = greeting else {
            return Refusal(stage: .mail, reply: .badSequence("Send HELO/EHLO first"), reason: "MAIL before HELO/EHLO")
        }
        if settings.requireTLS && tls == nil {
            return Refusal(stage: .mail, reply: .tlsRequired, reason: "MAIL before STARTTLS on a listener that requires TLS")
        }
        if transaction != nil {
            return Refusal(stage: .mail, reply: .badSequence("Nested MAIL command"), reason: "MAIL inside a transaction")
        }
        if p.auth != nil && settings.authMechanisms.isEmpty {
            return Refusal(stage: .mail, reply: .unsupportedParameter, reason: "AUTH= where AUTH is not offered")
        }
        if let user = authenticatedUser, settings.senderBinding, !senders.owns(sender) {
            return Refusal(stage: .mail, reply: .senderNotOwned, reason: "user \(user) does not own sender \(sender)")
        }
        // Extension parameters exist only where EHLO advertised them (RFC 5321 4.1.1.11).
        if !g.extended && (p.size != nil || p.body != nil || p.smtpUTF8 || p.ret != nil || p.envelopeID != nil) {
            return Refusal(stage: .mail, reply: .unsupportedParameter, reason: "MAIL parameters after HELO")
        }
        if let size = p.size, size > settings.maxMessageSize {
            return Refusal(stage: .mail, reply: .messageTooBig, reason: "declared SIZE=\(size) over \(settings.maxMessageSize)")
        }
        return nil
    }

    func checkRcpt(_ path: ForwardPath, _ p: RecipientParameters) -> Refusal? {
        guard let t = transaction else {
            return Refusal(stage: .rcpt, reply: .badSequence("Need MAIL before RCPT"), reason: "RCPT without MAIL")
        }
        if greeting?.extended == false && (p.notify != nil || p.originalRecipient != nil) {
            return Refusal(stage: .rcpt, reply: .unsupportedParameter, reason: "RCPT parameters after HELO")
        }
        if let m = path.mailbox, !m.isASCII, !t.smtpUTF8 {
            return Refusal(stage: .rcpt, reply: .utf8NeedsSMTPUTF8, reason: "non-ASCII recipient without SMTPUTF8")
        }
        if t.recipients.count >= settings.maxRecipients {
            return Refusal(stage: .rcpt, reply: .tooManyRecipients, reason: "recipient limit \(settings.maxRecipients)",
                           countsAsError: false)
        }
        return nil
    }

    // MARK: Proceeding

    /// One step of an AUTH exchange: a challenge, credentials for the driver, or a failure.
    mutating func saslStep(_ step: SASLExchange.Step, _ exchange: SASLExchange, _ actions: inout [SessionAction]) {
        switch step {
        case .challenge(let text):
            phase = .authExchange(exchange)
            actions.append(.reply(.authChallenge(String(decoding: Base64.encode(text), as: UTF8.self))))
        case .done(let credentials):
            phase = .awaitingAuthentication(credentials.mechanism)
            actions.append(.authenticate(credentials))
        case .failed(.cancelled):
            phase = .command
            refuse(Refusal(stage: .auth, reply: .authCancelled, reason: "client cancelled AUTH"), &actions)
        case .failed(.malformed(let why)):
            phase = .command
            refuse(Refusal(stage: .auth, reply: .authMalformed, reason: why), &actions)
        }
    }

    mutating func finishData(_ decoder: DataDecoder, _ actions: inout [SessionAction]) {
        progress += 1
        guard let t = transaction else { phase = .command; return }
        if let problem = decoder.problem {
            phase = .command
            transaction = nil
            refuse(Refusal(stage: .data, reply: problem.reply, reason: "message refused: \(problem) (\(decoder.size) octets)"),
                   &actions)
            return
        }
        phase = .awaitingEnqueue
        actions.append(.enqueue(MessageSubmission(envelope: t, heloName: greeting?.name ?? "", protocolWord: protocolWord(t),
                                                  tls: tls, body: decoder.body)))
    }

    /// RFC 3848 / RFC 6531 protocol words for `Received: ... with`: ESMTP, ESMTPS, UTF8SMTPS, ...
    func protocolWord(_ t: Envelope) -> String {
        guard greeting?.extended == true else { return "SMTP" }
        return (t.smtpUTF8 ? "UTF8SMTP" : "ESMTP") + (tls != nil ? "S" : "") + (authenticatedUser != nil ? "A" : "")
    }

    var extensions: [String] {
        var e = ["PIPELINING", "SIZE \(settings.maxMessageSize)", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES", "DSN"]
        if settings.offerSTARTTLS && tls == nil { e.append("STARTTLS") }
        // RFC 4954 4: offered only where it may be used (never over plaintext unless told otherwise).
        if !settings.authMechanisms.isEmpty && (tls != nil || settings.authWithoutTLS) {
            e.append("AUTH " + settings.authMechanisms.map(\.rawValue).joined(separator: " "))
        }
        return e
    }

    /// The one choke point for every "no": counts it toward the error limit and hands it to the
    /// driver, which logs it once and sends its reply.
    mutating func refuse(_ refusal: Refusal, _ actions: inout [SessionAction]) {
        actions.append(.refuse(refusal))
        guard refusal.countsAsError else { return }
        errors += 1
        if errors >= settings.maxErrors && !isClosed {
            actions.append(.refuse(Refusal(stage: .command, reply: .tooManyErrors,
                                           reason: "error limit \(settings.maxErrors) reached", countsAsError: false)))
            close(&actions)
        }
    }

    mutating func close(_ actions: inout [SessionAction]) {
        phase = .closed
        input.removeAll()
        actions.append(.close)
    }

    func verb(of c: Command) -> Verb? {
        switch c {
        case .mail: return .mail
        case .rcpt: return .rcpt
        default: return nil
        }
    }

    func stage(ofLine line: [UInt8]) -> Stage {
        let head = String(decoding: line.prefix(4), as: UTF8.self).uppercased()
        switch head {
        case "MAIL": return .mail
        case "RCPT": return .rcpt
        case "DATA": return .data
        case "HELO", "EHLO": return .helo
        case "AUTH": return .auth
        default: return .command
        }
    }
}
