import MailModel
import SMTPProtocol

/// Auth: checks SMTP AUTH credentials against the backends organisations already run, PAM and LDAP.
/// Every call here blocks (PAM conversations, LDAP round trips) and runs on the gateway's auth pool,
/// never on an event loop or the cooperative pool. Nothing here ever logs or returns a password; the
/// reasons it returns are for the mail log only, never for the client.
public enum Auth {}

/// One backend's answer.
public enum AuthOutcome: Sendable, Equatable {
    /// The password is right: the sender addresses the backend knows for the user (LDAP `mail`).
    case accepted(addresses: [String])
    /// Wrong password, unknown user, ambiguous entry, locked account: the client hears 535.
    case rejected(reason: String)
    /// The backend could not answer (down, timing out, misconfigured): the client hears 454.
    case unavailable(reason: String)
}

/// A credential checker. Implementations are thread-safe; `authenticate` blocks.
public protocol Authenticator: Sendable {
    var name: String { get }
    func authenticate(user: String, password: String, client: IPAddress) -> AuthOutcome
}

/// The backends of a listener, tried in order until one accepts.
public struct AuthChain: Sendable {
    public let backends: [any Authenticator]
    public init(_ backends: [any Authenticator]) { self.backends = backends }

    /// The outcome, and the backend that decided (nil when refused before any backend).
    /// A rejection by one backend lets the next try (the user may live there); when none accepts and
    /// any was unavailable, the answer is unavailable: a temporary failure, never a 535 that a down
    /// directory did not earn.
    public func authenticate(_ c: Credentials, client: IPAddress) -> (AuthOutcome, backend: String?) {
        if !c.authorizationID.isEmpty && c.authorizationID != c.user {
            return (.rejected(reason: "authorization identity differs from the user"), nil)
        }
        if c.user.isEmpty || c.user.utf8.count > 256 {
            return (.rejected(reason: "empty or overlong user name"), nil)
        }
        // Some directories treat a bind with an empty password as an anonymous success (RFC 4513 5.1.2).
        if c.password.isEmpty { return (.rejected(reason: "empty password"), nil) }
        if c.password.utf8.count > 1024 { return (.rejected(reason: "overlong password"), nil) }
        var unavailable: (String, String)?
        var rejected: (String, String)?
        for b in backends {
            switch b.authenticate(user: c.user, password: c.password, client: client) {
            case .accepted(let a): return (.accepted(addresses: a), b.name)
            case .rejected(let why): if rejected == nil { rejected = (b.name, why) }
            case .unavailable(let why): if unavailable == nil { unavailable = (b.name, why) }
            }
        }
        if let (name, why) = unavailable { return (.unavailable(reason: why), name) }
        if let (name, why) = rejected { return (.rejected(reason: why), name) }
        return (.unavailable(reason: "no authentication backend"), nil)
    }
}
