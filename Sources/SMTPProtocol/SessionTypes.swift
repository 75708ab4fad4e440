import MailModel

/// Limits and names a `ServerSession` works with. The driver builds one per connection (the bare-LF
/// switch depends on the client's network).
public struct SessionSettings: Sendable {
    public var hostname: String
    public var maxMessageSize: Int
    public var maxRecipients: Int
    public var maxErrors: Int
    /// RFC 5321 4.5.3.1.4: 512 octets, CRLF included; MAIL and RCPT get `Verb.extensionAllowance` more.
    public var commandLineLimit: Int
    /// RFC 5321 4.5.3.1.6: 1000 octets, CRLF included.
    public var textLineLimit: Int
    public var maxReceivedHeaders: Int
    public var normalizeBareLF: Bool
    /// STARTTLS is offered (RFC 3207).
    public var offerSTARTTLS = false
    /// MAIL before TLS gets 530 5.7.0.
    public var requireTLS = false
    /// The session is encrypted from its first byte (RFC 8314 implicit TLS).
    public var implicitTLS = false
    /// SMTP AUTH (RFC 4954) is offered, with these mechanisms; empty: not offered.
    public var authMechanisms: [SASLMechanism] = []
    /// AUTH is offered and accepted before TLS too. Never the default: passwords in the clear.
    public var authWithoutTLS = false
    /// An authenticated user may use only the sender addresses their `SenderOwnership` lists.
    public var senderBinding = true

    public init(hostname: String, maxMessageSize: Int = 25 * 1024 * 1024, maxRecipients: Int = 100,
                maxErrors: Int = 10, commandLineLimit: Int = 512, textLineLimit: Int = 1000,
                maxReceivedHeaders: Int = 30, normalizeBareLF: Bool = false) {
        self.hostname = hostname; self.maxMessageSize = maxMessageSize; self.maxRecipients = maxRecipients
        self.maxErrors = maxErrors; self.commandLineLimit = commandLineLimit; self.textLineLimit = textLineLimit
        self.maxReceivedHeaders = maxReceivedHeaders; self.normalizeBareLF = normalizeBareLF
    }

    /// The command-line limit for a verb, never past the 1000 octets of a text line. MAIL gets 500
    /// more for `AUTH=` where AUTH is offered (RFC 4954 5), and an AUTH line or SASL response may run to
    /// 12,288 octets (RFC 4954 4).
    func lineLimit(for verb: Verb?) -> Int {
        if verb == .auth { return authMechanisms.isEmpty ? commandLineLimit : Self.authLineLimit }
        let auth = verb == .mail && !authMechanisms.isEmpty ? 500 : 0
        return min(max(textLineLimit, commandLineLimit), commandLineLimit + (verb?.extensionAllowance ?? 0) + auth)
    }

    public static let authLineLimit = 12_288
}

/// The SMTP stage a refusal happened at (for logs, and for the policy that names stages).
public enum Stage: String, Sendable {
    case connect, helo, auth, mail, rcpt, data, command
}

/// A "no", with the reply the client gets and the reason only the log sees.
public struct Refusal: Sendable {
    public let stage: Stage
    public let reply: Reply
    public let reason: String
    /// Client errors count toward the error limit; local failures (a full disk) do not.
    public let countsAsError: Bool
    /// The policy rule that decided, for refusals at RCPT.
    public let rule: String?

    public init(stage: Stage, reply: Reply, reason: String, countsAsError: Bool = true, rule: String? = nil) {
        self.stage = stage; self.reply = reply; self.reason = reason; self.countsAsError = countsAsError; self.rule = rule
    }
}

/// What the session asks the relay policy about one recipient.
public struct RecipientRequest: Sendable {
    public let sender: ReversePath
    public let recipient: Recipient
    public let heloName: String?
}

/// How an AUTH attempt ended, as the driver reports it.
public enum AuthenticationResult: Sendable {
    /// 235: the user, and the sender addresses they own (for sender binding).
    case success(user: String, senders: SenderOwnership)
    /// Wrong password, unknown user, empty password: one answer for all (535 5.7.8).
    case rejected
    /// A backend could not answer: try again later (454 4.7.0), never 535.
    case unavailable
    /// Too many failures from this client or for this user: 421 4.7.0 and close.
    case throttled
}

/// The sender addresses an authenticated user may use: whole addresses, and `@domain` for any
/// address in a domain. Domains compare case-insensitively; local parts too, as Postfix's
/// `smtpd_sender_login_maps` lookups do.
public struct SenderOwnership: Sendable, Hashable {
    public var addresses: Set<String>
    public var domains: Set<String>

    public init(_ entries: [String] = []) {
        var a = Set<String>(), d = Set<String>()
        for e in entries {
            let l = e.lowercased()
            if l.hasPrefix("@") { d.insert(String(l.dropFirst()).trimmingDot) } else { a.insert(l.trimmingDot) }
        }
        addresses = a; domains = d
    }

    public func owns(_ sender: ReversePath) -> Bool {
        guard let m = sender.mailbox else { return true }   // <> is nobody's, so anybody's
        let domain = m.domain.description.lowercased()
        return domains.contains(domain) || addresses.contains("\(m.localPart.lowercased())@\(domain)")
    }

    public var isEmpty: Bool { addresses.isEmpty && domains.isEmpty }
}

extension String {
    var trimmingDot: String { hasSuffix(".") ? String(dropLast()) : self }
}

/// The policy's answer.
public enum RecipientVerdict: Sendable {
    case accept(rule: String)
    case refuse(Reply, rule: String, reason: String)
}

/// A complete message for the queue: envelope, the body as received (dot-stuffing undone, CRLF lines)
/// and what the `Received:` header needs.
public struct MessageSubmission: Sendable {
    public let envelope: Envelope
    public let heloName: String
    public let protocolWord: String
    /// `TLSv1.3 with cipher ...` for `Received:`, when the session is encrypted.
    public let tls: String?
    public let body: [UInt8]
}

public enum EnqueueResult: Sendable {
    case queued(QueueID)
    case noSpace(reason: String)
    case failed(reason: String)
}

/// Things worth a mail-log line that are not refusals.
public enum SessionEvent: Sendable {
    case helo(name: String, extended: Bool)
    case mailFrom(ReversePath)
    case recipientAccepted(Recipient, rule: String)
    case lineDiscarded(kind: String)
    case authenticated(user: String, mechanism: SASLMechanism)
}

/// What the driver must do, in order.
public enum SessionAction: Sendable {
    case reply(Reply)
    /// Send `refusal.reply` and log the refusal: the one place every "no" passes.
    case refuse(Refusal)
    /// Ask the policy and call `recipientDecided(_:)`; input is held until then.
    case decideRecipient(RecipientRequest)
    /// Store durably and call `enqueueCompleted(_:)`; input is held until then.
    case enqueue(MessageSubmission)
    case log(SessionEvent)
    /// Send what is written so far in plaintext, then start the TLS handshake; `discarded` octets that
    /// followed the STARTTLS line were thrown away (RFC 3207 4.2, the CVE-2011-0411 class).
    case startTLS(discarded: Int)
    /// Check these credentials (off the event loop) and call `authenticationFinished(_:)`; input is
    /// held until then.
    case authenticate(Credentials)
    /// Flush what is written, then close.
    case close
}

/// Which timer applies now (RFC 5321 4.5.3.2).
public enum SessionTimeout: Sendable { case command, data, none }
