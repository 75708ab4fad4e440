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

    public init(hostname: String, maxMessageSize: Int = 25 * 1024 * 1024, maxRecipients: Int = 100,
                maxErrors: Int = 10, commandLineLimit: Int = 512, textLineLimit: Int = 1000,
                maxReceivedHeaders: Int = 30, normalizeBareLF: Bool = false) {
        self.hostname = hostname; self.maxMessageSize = maxMessageSize; self.maxRecipients = maxRecipients
        self.maxErrors = maxErrors; self.commandLineLimit = commandLineLimit; self.textLineLimit = textLineLimit
        self.maxReceivedHeaders = maxReceivedHeaders; self.normalizeBareLF = normalizeBareLF
    }

    /// The command-line limit for a verb, never past the 1000 octets of a text line.
    func lineLimit(for verb: Verb?) -> Int {
        min(max(textLineLimit, commandLineLimit), commandLineLimit + (verb?.extensionAllowance ?? 0))
    }
}

/// The SMTP stage a refusal happened at (for logs, and for the policy that names stages).
public enum Stage: String, Sendable {
    case connect, helo, mail, rcpt, data, command
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
    /// Flush what is written, then close.
    case close
}

/// Which timer applies now (RFC 5321 4.5.3.2).
public enum SessionTimeout: Sendable { case command, data, none }
