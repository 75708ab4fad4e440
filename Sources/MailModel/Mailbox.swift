/// An RFC 5321 Mailbox: `Local-part "@" ( Domain / address-literal )`.
/// `localPart` is kept exactly as the client wrote it (quotes and escapes included) so that it is
/// forwarded byte for byte; `%` and `!` are ordinary characters here and never route.
public struct Mailbox: Hashable, Sendable, CustomStringConvertible {
    public let localPart: String
    public let domain: Domain

    public init(localPart: String, domain: Domain) {
        self.localPart = localPart
        self.domain = domain
    }

    public var isQuoted: Bool { localPart.hasPrefix("\"") }
    public var isASCII: Bool { localPart.utf8.allSatisfy { $0 < 0x80 } && domainIsASCII }
    var domainIsASCII: Bool { if case .name(let n) = domain { return n.isASCII } else { return true } }

    /// Local parts compare as written (RFC 5321 2.4: case may matter); domains case-insensitively.
    public var description: String { "\(localPart)@\(domain)" }
}

/// MAIL FROM's argument: a mailbox or the null reverse-path `<>` (bounces).
public enum ReversePath: Hashable, Sendable, CustomStringConvertible {
    case null
    case mailbox(Mailbox)

    public var description: String {
        switch self {
        case .null: return "<>"
        case .mailbox(let m): return "<\(m)>"
        }
    }
    public var mailbox: Mailbox? { if case .mailbox(let m) = self { return m } else { return nil } }
}

/// RCPT TO's argument: a mailbox, or the bare `<Postmaster>` every SMTP server must know (RFC 5321 4.1.1.3).
public enum ForwardPath: Hashable, Sendable, CustomStringConvertible {
    case postmaster
    case mailbox(Mailbox)

    public var description: String {
        switch self {
        case .postmaster: return "<Postmaster>"
        case .mailbox(let m): return "<\(m)>"
        }
    }
    public var mailbox: Mailbox? { if case .mailbox(let m) = self { return m } else { return nil } }
}
