import Glibc
import MailModel
import Queue
import RelayPolicy
import SMTPProtocol
import TLS
import Transport

/// Drives one connection: bytes in, `ServerSession` actions out. Lives on its connection's loop.
final class SessionDriver: ConnectionDelegate, @unchecked Sendable {
    let id: SessionID
    let connection: Connection
    let context: ServerContext
    let listenerName: String
    let onEnd: (SessionDriver) -> Void
    var session: ServerSession
    var greeted = false
    var ended = false
    var timer: TimerID?
    var deadline: UInt64 = 0
    var timerDeadline: UInt64 = 0
    var lastProgress = -1
    var lastTimeout = SessionTimeout.none
    let startedAt = MonotonicClock.now()
    var stats = (messages: 0, recipients: 0, refusals: 0)

    var log: MailLog { context.log }

    init(id: SessionID, connection: Connection, context: ServerContext, listenerName: String,
         onEnd: @escaping (SessionDriver) -> Void) {
        self.id = id
        self.connection = connection
        self.context = context
        self.listenerName = listenerName
        self.onEnd = onEnd
        self.session = ServerSession(settings: context.sessionSettings(for: connection.peer.ip, listener: listenerName))
    }

    /// Set once STARTTLS (or implicit TLS) begins; from then on every byte goes through it.
    var tls: TLSSession?
    var tlsInfo: TLSInfo?

    func start() {
        connection.delegate = self
        log.event("connect", session: id, [("client", connection.peer.description), ("listener", listenerName),
                                            ("local", connection.local.description)])
        let delay = context.configuration.smtp.greetingDelay.nanoseconds
        if session.settings.implicitTLS {
            // RFC 8314: TLS from the first byte; the greeting comes once the handshake is done.
            guard beginTLS() else { return }
            armHandshakeTimer()
        } else if delay > 0 {
            timer = connection.loop.schedule(at: MonotonicClock.now() + delay) { [self] in
                self.timer = nil
                self.greet()
            }
        } else {
            greet()
        }
    }

    func greet() {
        guard !ended, !greeted else { return }
        greeted = true
        if tls == nil && connection.hasPendingInput {
            perform(session.clientSpokeEarly())
        } else {
            perform(session.start())
        }
    }

    // MARK: ConnectionDelegate

    func connectionReceived(_ bytes: ArraySlice<UInt8>) {
        guard !ended else { return }
        if let tls {
            receiveTLS(tls, bytes)
            return
        }
        receivePlain(bytes)
    }

    func receivePlain(_ bytes: ArraySlice<UInt8>) {
        if !greeted {
            greeted = true
            if let t = timer { connection.loop.cancel(t); timer = nil }
            perform(session.clientSpokeEarly())
            return
        }
        if session.timeout == .data { lastProgress = -1 }   // a DATA block arrived: restart its timer
        perform(session.receive(bytes))
    }

    func connectionClosed() {
        guard !ended else { return }
        ended = true
        if let t = timer { connection.loop.cancel(t); timer = nil }
        let ms = (MonotonicClock.now() - startedAt) / 1_000_000
        log.event("disconnect", session: id, [("client", connection.peer.description), ("duration", "\(ms)ms"),
                                               ("messages", "\(stats.messages)"), ("recipients", "\(stats.recipients)"),
                                               ("refusals", "\(stats.refusals)")])
        onEnd(self)
    }

    // MARK: TLS

    /// Starts the server side of a handshake on this connection.
    @discardableResult
    func beginTLS() -> Bool {
        guard let ctx = context.tls[listenerName], let t = ctx.makeSession() else {
            log.error("tls", session: id, [("result", "unavailable"), ("reason", "no TLS context for listener \(listenerName)")])
            connection.close()
            return false
        }
        tls = t
        return true
    }

    func receiveTLS(_ t: TLSSession, _ bytes: ArraySlice<UInt8>) {
        for event in t.receive(bytes) {
            guard !ended else { return }
            switch event {
            case .data(let plain):
                receivePlain(plain[...])
            case .established(let info):
                tlsInfo = info
                logTLS(info)
                let description = "\(info.version) with cipher \(info.cipher)"
                if session.settings.implicitTLS && !greeted {
                    _ = session.tlsEstablished(description)
                    greet()
                } else {
                    perform(session.tlsEstablished(description))
                }
            case .failed(let reason):
                flushTLS()
                log.warning("tls", session: id, [("result", "failed"), ("client", connection.peer.description), ("reason", reason)])
                connection.closeAfterFlush()
                return
            case .closed:
                flushTLS()
                connection.closeAfterFlush()
                return
            }
        }
        flushTLS()
    }

    func flushTLS() {
        guard let tls else { return }
        let out = tls.takeOutput()
        if !out.isEmpty { connection.write(out) }
    }

    /// Everything the session says goes out through here: encrypted once TLS is on.
    func send(_ bytes: [UInt8]) {
        guard !bytes.isEmpty else { return }
        if let tls, tls.handshakeComplete {
            tls.send(bytes)
            flushTLS()
        } else {
            connection.write(bytes)
        }
    }

    func logTLS(_ info: TLSInfo) {
        var fields: [(String, String)] = [("result", "established"), ("version", info.version), ("cipher", info.cipher)]
        if let sni = info.serverName { fields.append(("sni", sni)) }
        if let peer = info.peer {
            fields.append(("client_cert", "sha256:\(peer.spkiSHA256)"))
            fields.append(("subject", peer.subject))
            fields.append(("verified", peer.verifiedBy.sorted().joined(separator: ",").isEmpty ? "none" : peer.verifiedBy.sorted().joined(separator: ",")))
            if peer.verifiedBy.isEmpty { fields.append(("reason", peer.verificationFailures.joined(separator: "; "))) }
        }
        log.event("tls", session: id, fields)
    }

    /// close_notify, when a TLS session is up.
    func closeTLS() {
        guard let tls, tls.handshakeComplete else { return }
        tls.shutdown()
        flushTLS()
    }

    func armHandshakeTimer() {
        let limit = context.configuration.limits.commandTimeout.nanoseconds
        timer = connection.loop.schedule(at: MonotonicClock.now() + limit) { [self] in
            self.timer = nil
            guard !self.ended, !(self.tls?.handshakeComplete ?? true) else { return }
            self.log.warning("tls", session: self.id, [("result", "failed"), ("reason", "handshake timeout")])
            self.connection.close()
        }
    }

    // MARK: Actions

    func perform(_ actions: [SessionAction]) {
        var replies: [UInt8] = []
        var closeAfter = false
        for action in actions {
            switch action {
            case .reply(let r):
                replies += r.wire
                log.debug("reply", session: id, [("reply", r.description)])
            case .refuse(let refusal):
                stats.refusals += 1
                logRefusal(refusal)
                replies += refusal.reply.wire
            case .log(let event):
                logEvent(event)
            case .decideRecipient(let request):
                let (verdict, domain) = decide(request)
                if !replies.isEmpty { send(replies); replies = [] }
                if let domain, let check = context.loopCheck {
                    checkLoop(domain, check, then: verdict)
                } else {
                    perform(session.recipientDecided(verdict))
                }
            case .enqueue(let submission):
                if !replies.isEmpty { send(replies); replies = [] }
                enqueue(submission)
            case .startTLS(let discarded):
                // The 220 goes out in plaintext; whatever followed STARTTLS was already thrown away.
                if !replies.isEmpty { send(replies); replies = [] }
                if discarded > 0 {
                    log.warning("starttls", session: id, [("discarded", "\(discarded)"), ("reason", "plaintext after STARTTLS")])
                }
                beginTLS()
            case .authenticate(let credentials):
                if !replies.isEmpty { send(replies); replies = [] }
                authenticate(credentials)
            case .close:
                closeAfter = true
            }
        }
        if !replies.isEmpty { send(replies) }
        if closeAfter || session.isClosed {
            closeTLS()
            connection.closeAfterFlush()
            return
        }
        if session.wantsInput { connection.resumeReading() } else { connection.pauseReading() }
        armTimer()
    }

    /// A recipient relayed for its domain alone (the backup-MX case) whose best MX is this host would
    /// loop: refused now with 5.4.6 rather than accepted and bounced later. The DNS lookup runs on the
    /// lookup pool; the session waits (its input held) until the answer is back on the loop.
    func checkLoop(_ domain: String, _ check: @escaping @Sendable (String) -> Bool, then verdict: RecipientVerdict) {
        let loop = connection.loop
        context.auth.pool.submit { [self] in
            let loops = check(domain)
            loop.execute { [self] in
                guard !self.ended else { return }
                let rule: String
                if case .accept(let r) = verdict { rule = r } else { rule = "" }
                self.perform(self.session.recipientDecided(
                    loops ? .refuse(.mailLoops, rule: "builtin:mail-loop", reason: "\(domain): this host is its best MX (rule \(rule) matched)")
                          : verdict))
            }
        }
    }

    /// Asks the relay engine; the verdict and the log line both carry the rule that decided. The
    /// domain comes back when the recipient was relayed for its domain alone (a loop check is due).
    func decide(_ r: RecipientRequest) -> (RecipientVerdict, String?) {
        let cert = tlsInfo?.peer?.facts
        let facts = SessionFacts(listener: listenerName, client: connection.peer.ip, heloName: r.heloName,
                                 tls: tlsInfo != nil, certificate: cert, authenticatedUser: session.authenticatedUser)
        let d = context.engine.decide(RelayQuery(session: facts, sender: r.sender, recipient: r.recipient.path))
        switch d.verdict {
        case .relay:
            var domain: String?
            if case .rule(let rule) = d.source, !rule.trustsClient, case .name(let n)? = r.recipient.path.mailbox?.domain {
                domain = n.canonical
            }
            return (.accept(rule: d.ruleName), domain)
        case .refuse(let reply), .defer_(let reply): return (.refuse(reply, rule: d.ruleName, reason: d.reason), nil)
        }
    }

    func enqueue(_ s: MessageSubmission) {
        let queueID = SpoolDirectory.newID()
        let now = Int(time(nil))
        let received = ReceivedHeader.format(
            heloName: s.heloName, clientAddress: connection.peer.ip, clientName: nil, hostname: context.hostname,
            protocolWord: s.protocolWord, queueID: queueID,
            recipient: s.envelope.recipients.count == 1 ? s.envelope.recipients[0].path : nil,
            tls: s.tls.map { "using \($0)" }, date: now)
        let size = received.count + s.body.count
        let stored = StoredEnvelope(
            id: queueID, received: now, envelope: s.envelope, size: size,
            client: .init(address: connection.peer.ip.description, helo: s.heloName, session: id.description,
                          listener: listenerName, protocol: s.protocolWord))
        let header = QueueFile.header(stored)
        let spool = context.spool
        let loop = connection.loop
        let body = s.body
        context.writers.submit { [self] in
            let result: EnqueueResult
            do throws(QueueError) {
                try spool.store(id: queueID, header: header, data: [received, body])
                result = .queued(queueID)
            } catch {
                switch error {
                case .noSpace: result = .noSpace(reason: "\(error)")
                case .io: result = .failed(reason: "\(error)")
                }
            }
            loop.execute { [self] in
                guard !self.ended else {
                    // Stored, but the client is gone before hearing 250: it will send again (a duplicate,
                    // never a loss).
                    if case .queued(let id) = result { self.log.warning("queued-unacknowledged", session: self.id, [("id", id.text)]) }
                    return
                }
                if case .queued(let id) = result {
                    self.stats.messages += 1
                    self.log.event("accepted", session: self.id, [
                        ("id", id.text), ("size", "\(size)"), ("from", s.envelope.sender.description),
                        ("nrcpt", "\(s.envelope.recipients.count)"),
                        ("rcpt", s.envelope.recipients.map { $0.path.description }.joined(separator: ",")),
                    ])
                    // Only now, so that the mail log says `accepted` before any `delivery` line.
                    self.context.queued(id)
                }
                self.perform(self.session.enqueueCompleted(result))
            }
        }
    }

    func logRefusal(_ r: Refusal) {
        var fields: [(String, String)] = [("stage", r.stage.rawValue), ("client", connection.peer.ip.description),
                                          ("code", "\(r.reply.code)"), ("status", r.reply.status?.description ?? "-"),
                                          ("reply", r.reply.lines.joined(separator: " "))]
        if let rule = r.rule { fields.append(("rule", rule)) }
        fields.append(("reason", r.reason))
        log.event("refuse", session: id, fields)
    }

    func logEvent(_ e: SessionEvent) {
        switch e {
        case .helo(let name, let extended):
            log.event(extended ? "ehlo" : "helo", session: id, [("name", name)])
        case .mailFrom(let sender):
            log.debug("mail", session: id, [("from", sender.description)])
        case .recipientAccepted(let r, let rule):
            stats.recipients += 1
            log.event("rcpt", session: id, [("to", r.path.description), ("verdict", "relay"), ("rule", rule)])
        case .authenticated:
            break   // logged with its backend by logAuth
        case .lineDiscarded(let kind):
            log.debug("discard", session: id, [("kind", kind)])
        }
    }

    // MARK: Timeouts (RFC 5321 4.5.3.2)

    func armTimer() {
        let kind = session.timeout
        if kind == .none {
            if let t = timer { connection.loop.cancel(t); timer = nil }
            lastTimeout = kind
            return
        }
        if kind != lastTimeout || session.progress != lastProgress {
            lastTimeout = kind
            lastProgress = session.progress
            let limit = kind == .data ? context.configuration.limits.dataTimeout : context.configuration.limits.commandTimeout
            deadline = MonotonicClock.now() + limit.nanoseconds
        }
        // A timer set for a later deadline (the command timeout, say, when DATA's is shorter) is moved.
        if let t = timer, timerDeadline > deadline {
            connection.loop.cancel(t)
            timer = nil
        }
        if timer == nil {
            timerDeadline = deadline
            timer = connection.loop.schedule(at: deadline) { [self] in self.timerFired() }
        }
    }

    func timerFired() {
        timer = nil
        guard !ended, session.timeout != .none else { return }
        if MonotonicClock.now() >= deadline {
            perform(session.timedOut())
        } else {
            timerDeadline = deadline
            timer = connection.loop.schedule(at: deadline) { [self] in self.timerFired() }
        }
    }

    // MARK: Shutdown

    func beginShutdown() {
        guard !ended else { return }
        perform(session.beginShutdown())
    }

    func forceClose() {
        guard !ended else { return }
        if session.isIdle || session.timeout == .data { send(Reply.shuttingDown.wire) }
        closeTLS()
        connection.closeAfterFlush()
    }
}
