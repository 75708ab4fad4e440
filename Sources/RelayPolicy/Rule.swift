import MailModel
import PolicyLanguage
import SMTPProtocol

/// A named list as a rule refers to it: `<office>`, or an inline value shown as written.
public struct ListReference<Set: Sendable & Hashable>: Sendable, Hashable {
    public let label: String
    public let set: Set
    public init(label: String, set: Set) { self.label = label; self.set = set }
}

/// A set of user names (exact, case-sensitive as the backends see them).
public typealias UserSet = Swift.Set<String>

/// One condition of a rule; a rule matches when all of its conditions hold. One case per keyword.
public enum Condition: Sendable, Hashable {
    /// `from <networks>`: the client address.
    case from(ListReference<NetworkSet>)
    /// `to <domains>`: the recipient's domain (names only; address literals never match a list).
    case to(ListReference<DomainSet>)
    /// `sender <domains>`: the MAIL FROM domain. Forgeable: never sufficient on its own.
    case sender(ListReference<DomainSet>)
    /// `authenticated` or `authenticated <users>`.
    case authenticated(ListReference<UserSet>?)
    /// `certificate ca NAME`: the client certificate chained to that configured CA.
    case certificateCA(String)
    /// `certificate pin <pins>`: the SHA-256 of the certificate's SubjectPublicKeyInfo.
    case certificatePin(ListReference<Swift.Set<String>>)
    /// `certificate subject "DN"`: the subject, exactly (RFC 2253 form).
    case certificateSubject(String)
    /// `certificate san NAME`: one of the subject alternative names, case-insensitively.
    case certificateSAN(String)
    /// `listener NAME`.
    case listener(String)
    /// `tls`: the session is encrypted.
    case tls

    /// Whether this condition says something about who the client is (not what it asks for).
    public var trustsClient: Bool {
        switch self {
        case .from, .authenticated, .certificateCA, .certificatePin, .certificateSubject, .certificateSAN: return true
        case .to, .sender, .listener, .tls: return false
        }
    }

    public func holds(_ q: RelayQuery) -> Bool {
        switch self {
        case .from(let l): return l.set.contains(q.session.client)
        case .to(let l):
            if case .name(let d) = q.recipient.mailbox?.domain { return l.set.contains(d) }
            return false
        case .sender(let l):
            if case .name(let d) = q.sender.mailbox?.domain { return l.set.contains(d) }
            return false
        case .authenticated(let users):
            guard let u = q.session.authenticatedUser else { return false }
            return users.map { $0.set.contains(u) } ?? true
        case .certificateCA(let name): return q.session.certificate?.verifiedBy.contains(name) ?? false
        case .certificatePin(let l): return q.session.certificate.map { l.set.contains($0.spkiSHA256) } ?? false
        case .certificateSubject(let s): return q.session.certificate?.subject == s
        case .certificateSAN(let s):
            return q.session.certificate?.subjectAltNames.contains { $0.lowercased() == s.lowercased() } ?? false
        case .listener(let n): return q.session.listener == n
        case .tls: return q.session.tls
        }
    }

    /// Why it does not hold, for the trace (only built when a trace is asked for).
    public func whyNot(_ q: RelayQuery) -> String {
        switch self {
        case .from(let l): return "client \(q.session.client) is not in \(l.label)"
        case .to(let l):
            guard let m = q.recipient.mailbox else { return "recipient \(q.recipient) has no domain" }
            if m.domain.isAddressLiteral { return "recipient domain \(m.domain) is an address literal, not in \(l.label)" }
            return "recipient domain \(m.domain) is not in \(l.label)"
        case .sender(let l):
            guard let m = q.sender.mailbox else { return "sender is <>, not in \(l.label)" }
            return "sender domain \(m.domain) is not in \(l.label)"
        case .authenticated(let users):
            guard let u = q.session.authenticatedUser else { return "client is not authenticated" }
            return "user \(u) is not in \(users?.label ?? "any")"
        case .certificateCA(let name):
            guard let c = q.session.certificate else { return "no client certificate" }
            return c.verifiedBy.isEmpty ? "client certificate is not verified by any CA" : "client certificate is not verified by CA \(name)"
        case .certificatePin(let l):
            guard let c = q.session.certificate else { return "no client certificate" }
            return "certificate sha256:\(c.spkiSHA256) is not in \(l.label)"
        case .certificateSubject(let s):
            guard let c = q.session.certificate else { return "no client certificate" }
            return "certificate subject \(c.subject ?? "(none)") is not \"\(s)\""
        case .certificateSAN(let s):
            guard q.session.certificate != nil else { return "no client certificate" }
            return "certificate has no subject alternative name \(s)"
        case .listener(let n): return "listener is \(q.session.listener), not \(n)"
        case .tls: return "session is not encrypted"
        }
    }
}

/// What a rule grants.
public enum Verdict: Sendable, Hashable, CustomStringConvertible {
    case relay
    case refuse(Reply)
    case defer_(Reply)

    public var description: String {
        switch self {
        case .relay: return "relay"
        case .refuse: return "refuse"
        case .defer_: return "defer"
        }
    }
    public var reply: Reply? {
        switch self {
        case .relay: return nil
        case .refuse(let r), .defer_(let r): return r
        }
    }
}

/// One rule of the ordered list: a verdict and the conditions that must all hold.
public struct Rule: Sendable, Hashable {
    public let verdict: Verdict
    public let conditions: [Condition]
    public let location: SourceLocation
    /// The rule as written, for traces and logs.
    public let text: String

    public init(verdict: Verdict, conditions: [Condition], location: SourceLocation, text: String) {
        self.verdict = verdict; self.conditions = conditions; self.location = location; self.text = text
    }

    public var trustsClient: Bool { conditions.contains { $0.trustsClient } }

    /// `file:line` for log lines.
    public var name: String { "\(location.file):\(location.line)" }
}
