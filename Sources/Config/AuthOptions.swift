import Auth
import SMTPProtocol

/// SMTP AUTH settings: the named backends, the global `auth { }` block, and the sender lists.
public struct AuthOptions: Sendable {
    public enum Backend: Sendable, Hashable {
        case pam(PAMAuthenticator.Settings)
        case ldap(LDAPAuthenticator.Settings)
    }

    /// `pam NAME { }` and `ldap NAME { }`, by name.
    public var backends: [String: Backend] = [:]
    public var mechanisms: [SASLMechanism] = [.plain, .login]
    /// `auth { backends ... }`: for every listener that names none of its own.
    public var defaultBackends: [String] = []
    /// Every failed AUTH is answered this long after it began, whatever the reason (no enumeration
    /// by timing).
    public var failureDelay: Duration = .seconds(2)
    public var throttle = FailureThrottle.Settings()
    /// An authenticated user may send only as the addresses mapped to them.
    public var senderBinding = true
    /// `senders NAME`: the list that maps users to their sender addresses.
    public var sendersList: String?
    /// `senders NAME { user address... }`: user -> addresses (`@domain` for a whole domain).
    public var senderLists: [String: [String: [String]]] = [:]
    public init() {}

    /// The addresses the configuration gives `user` (the LDAP backend may add its `mail` values).
    public func configuredSenders(of user: String) -> [String] {
        guard let name = sendersList, let list = senderLists[name] else { return [] }
        return list[user] ?? list[user.lowercased()] ?? []
    }
}
