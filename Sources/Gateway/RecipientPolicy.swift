import MailModel
import SMTPProtocol

/// The facts of a session the relay decision may use.
public struct RecipientFacts: Sendable {
    public let listener: String
    public let client: IPAddress
    public let heloName: String?
    public let sender: ReversePath
    public let recipient: ForwardPath
}

/// Decides, per recipient at RCPT, whether it may be relayed. Pure and fast: it runs on the loop.
public protocol RecipientPolicy: Sendable {
    func decide(_ facts: RecipientFacts) -> RecipientVerdict
}

/// The built-in rule of the embedded default: clients 127.0.0.1 and ::1 (or ::ffff:127.0.0.1) may
/// relay anywhere; everything else is refused with `550 5.7.1 Relaying denied`. The relay-policy
/// language replaces it with rules from the configuration.
public struct LoopbackRelayPolicy: RecipientPolicy {
    static let trusted = [IPNetwork("127.0.0.1/32")!, IPNetwork("::1/128")!]
    public init() {}

    public func decide(_ facts: RecipientFacts) -> RecipientVerdict {
        guard facts.recipient.mailbox != nil else {
            // No mailboxes here: <Postmaster> without a domain has nowhere to go.
            return .refuse(.noLocalMailboxes, reason: "bare <Postmaster>: this host has no mailboxes")
        }
        if Self.trusted.contains(where: { $0.contains(facts.client) }) {
            return .accept(rule: "default:trusted-loopback")
        }
        return .refuse(.relayDenied, reason: "rule=default:refuse client \(facts.client) is not trusted")
    }
}
