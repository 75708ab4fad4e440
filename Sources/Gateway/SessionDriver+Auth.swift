import Auth
import MailModel
import SMTPProtocol
import Transport

/// SMTP AUTH for a session: the backends run on the auth pool; every failure is answered the same
/// `failure-delay` after the attempt began, on a loop timer, so wrong passwords and unknown users
/// look alike from outside and no thread sleeps.
extension SessionDriver {
    func authenticate(_ c: Credentials) {
        let began = MonotonicClock.now()
        let client = connection.peer.ip.unmapped
        let runtime = context.auth
        let blocked = runtime.throttle.withLock { $0.isBlocked(client: client, user: c.user, now: began) }
        if blocked {
            logAuth(c, result: "throttled", backend: nil, reason: "cooling off after too many failures")
            perform(session.authenticationFinished(.throttled))
            return
        }
        guard let chain = context.authChains[listenerName] else {
            logAuth(c, result: "unavailable", backend: nil, reason: "no backend for listener")
            perform(session.authenticationFinished(.unavailable))
            return
        }
        let loop = connection.loop
        runtime.pool.submit { [self] in
            let (outcome, backend) = chain.authenticate(c, client: client)
            loop.execute { [self] in self.authenticated(c, outcome, backend: backend, began: began, client: client) }
        }
    }

    func authenticated(_ c: Credentials, _ outcome: AuthOutcome, backend: String?, began: UInt64, client: IPAddress) {
        guard !ended else { return }
        let runtime = context.auth
        switch outcome {
        case .accepted(let addresses):
            runtime.throttle.withLock { $0.recordSuccess(client: client) }
            let owned = SenderOwnership(context.configuration.auth.configuredSenders(of: c.user) + addresses)
            logAuth(c, result: "ok", backend: backend, reason: nil, senders: owned)
            perform(session.authenticationFinished(.success(user: c.user, senders: owned)))
        case .unavailable(let reason):
            logAuth(c, result: "unavailable", backend: backend, reason: reason)
            perform(session.authenticationFinished(.unavailable))
        case .rejected(let reason):
            let now = MonotonicClock.now()
            let crossed = runtime.throttle.withLock { $0.recordFailure(client: client, user: c.user, now: now) }
            logAuth(c, result: crossed ? "throttled" : "failed", backend: backend, reason: reason)
            let due = began + context.configuration.auth.failureDelay.nanoseconds
            let finish: () -> Void = { [self] in
                guard !self.ended else { return }
                self.perform(self.session.authenticationFinished(crossed ? .throttled : .rejected))
            }
            if due <= now { finish() } else { connection.loop.schedule(at: due, finish) }
        }
    }

    /// Never the password; the user name as the client sent it, quoted by the log.
    func logAuth(_ c: Credentials, result: String, backend: String?, reason: String?, senders: SenderOwnership? = nil) {
        var fields: [(String, String)] = [("result", result), ("client", connection.peer.ip.description),
                                          ("mechanism", c.mechanism.rawValue), ("user", String(c.user.prefix(128)))]
        if let backend { fields.append(("backend", backend)) }
        if let senders { fields.append(("senders", "\(senders.addresses.count + senders.domains.count)")) }
        if let reason { fields.append(("reason", reason)) }
        if result == "ok" { log.event("auth", session: id, fields) } else { log.warning("auth", session: id, fields) }
    }
}
