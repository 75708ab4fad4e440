import MailModel

/// The verbs Relaygate knows, as an explicit table (STYLE 4): what each adds to the command-line limit
/// and whether it is implemented. Network input is dispatched by an exhaustive `switch`, never by name.
public enum Verb: String, CaseIterable, Sendable {
    case ehlo = "EHLO", helo = "HELO", mail = "MAIL", rcpt = "RCPT", data = "DATA", rset = "RSET"
    case noop = "NOOP", quit = "QUIT", vrfy = "VRFY", help = "HELP", starttls = "STARTTLS", auth = "AUTH"
    // Known to RFC 5321 and its extensions, deliberately not implemented here (502 5.5.1).
    case expn = "EXPN", turn = "TURN", etrn = "ETRN", bdat = "BDAT"
    case send = "SEND", soml = "SOML", saml = "SAML", atrn = "ATRN"

    public var isImplemented: Bool {
        switch self {
        case .ehlo, .helo, .mail, .rcpt, .data, .rset, .noop, .quit, .vrfy, .help, .starttls, .auth: return true
        case .expn, .turn, .etrn, .bdat, .send, .soml, .saml, .atrn: return false
        }
    }

    /// Octets the advertised extensions add to this verb's 512-octet line (RFC 1870 4: SIZE 26;
    /// RFC 3461 4: RET+ENVID 100 on MAIL, NOTIFY+ORCPT 500 on RCPT; RFC 6531 3.4: SMTPUTF8 10;
    /// RFC 6152 BODY=8BITMIME 14).
    public var extensionAllowance: Int {
        switch self {
        case .mail: return 26 + 100 + 10 + 14
        case .rcpt: return 500
        default: return 0
        }
    }

    static let byName: [String: Verb] = Dictionary(uniqueKeysWithValues: allCases.map { ($0.rawValue, $0) })
}

/// Parameters of MAIL (RFC 1870, 6152, 6531, 3461).
public struct MailParameters: Hashable, Sendable {
    public var size: Int?
    public var body: BodyType?
    public var smtpUTF8 = false
    public var ret: DSNReturn?
    public var envelopeID: String?
    /// RFC 4954 5 `AUTH=`: the xtext-decoded mailbox, or `<>`; kept for the log, never trusted.
    public var auth: String?
    public init() {}
}

/// Parameters of RCPT (RFC 3461).
public struct RecipientParameters: Hashable, Sendable {
    public var notify: DSNNotify?
    public var originalRecipient: OriginalRecipient?
    public init() {}
}

/// One parsed command line.
public enum Command: Hashable, Sendable {
    case ehlo(String)
    case helo(String)
    case mail(ReversePath, MailParameters)
    case rcpt(ForwardPath, RecipientParameters)
    case data
    case rset
    case noop
    case quit
    case vrfy(String)
    case help
    case starttls
    /// `AUTH mechanism [initial-response]` (RFC 4954 4); the mechanism name as sent, uppercased.
    case auth(mechanism: String, initialResponse: [UInt8]?)
    case notImplemented(Verb)
}

/// Why a command line was refused by the parser. Each maps to exactly one reply.
public enum CommandError: Error, Hashable, Sendable {
    case unknownCommand
    case notImplemented
    case syntax(usage: String)
    case noArgumentsAllowed
    case badCharacters
    case badHeloName
    case badSender
    case badRecipient
    case badParameter
    case unsupportedParameter
    case sizeTooLarge
    case utf8Required

    public var reply: Reply {
        switch self {
        case .unknownCommand: return .unknownCommand
        case .notImplemented: return .notImplemented
        case .syntax(let usage): return .syntax(usage)
        case .noArgumentsAllowed: return .noArguments
        case .badCharacters: return .badCharacters
        case .badHeloName: return .badHeloName
        case .badSender: return .badSenderSyntax
        case .badRecipient: return .badRecipientSyntax
        case .badParameter: return .badParameterSyntax
        case .unsupportedParameter: return .unsupportedParameter
        case .sizeTooLarge: return .messageTooBig
        case .utf8Required: return .utf8NeedsSMTPUTF8
        }
    }
}
