/// Every reply the receiving side can send, in one place. Texts are generic on purpose: no reply names a
/// configuration item, a file or a backend (STYLE: generic text for the client, detail in the log).
extension Reply {
    // MARK: Connection
    public static func greeting(_ hostname: String) -> Reply { Reply(220, nil, "\(hostname) ESMTP Relaygate") }
    public static let earlyTalker = Reply(554, EnhancedStatus(5, 5, 1), "Protocol error: data sent before greeting")
    public static let tooManySessions = Reply(421, EnhancedStatus(4, 7, 0), "Too many connections, try again later")
    public static let tooManySessionsFromClient =
        Reply(421, EnhancedStatus(4, 7, 0), "Too many connections from your address, try again later")
    public static let tooManyErrors = Reply(421, EnhancedStatus(4, 7, 0), "Too many errors, closing connection")
    public static let commandTimeout = Reply(421, EnhancedStatus(4, 4, 2), "Timeout waiting for command, closing connection")
    public static let dataTimeout = Reply(421, EnhancedStatus(4, 4, 2), "Timeout waiting for data, closing connection")
    public static let shuttingDown = Reply(421, EnhancedStatus(4, 3, 2), "Service shutting down, try again later")
    public static let bye = Reply(221, EnhancedStatus(2, 0, 0), "Bye")

    // MARK: Commands in general
    public static let ok = Reply(250, EnhancedStatus(2, 0, 0), "OK")
    public static let unknownCommand = Reply(500, EnhancedStatus(5, 5, 1), "Command unrecognized")
    public static let notImplemented = Reply(502, EnhancedStatus(5, 5, 1), "Command not implemented")
    public static let lineTooLong = Reply(500, EnhancedStatus(5, 5, 2), "Line too long")
    public static let bareLineFeed = Reply(500, EnhancedStatus(5, 5, 2), "Lines must end with CRLF")
    public static let badCharacters = Reply(500, EnhancedStatus(5, 5, 2), "Invalid characters in command")
    public static func syntax(_ usage: String) -> Reply { Reply(501, EnhancedStatus(5, 5, 2), "Syntax: \(usage)") }
    public static let noArguments = Reply(501, EnhancedStatus(5, 5, 4), "No parameters allowed")
    public static func badSequence(_ text: String) -> Reply { Reply(503, EnhancedStatus(5, 5, 1), text) }
    public static let vrfy = Reply(252, EnhancedStatus(2, 5, 2), "Cannot verify the user, but will accept mail for relaying where allowed")
    public static let help = Reply(214, EnhancedStatus(2, 0, 0), [
        "Commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP",
        "See RFC 5321",
    ])

    // MARK: HELO / EHLO (RFC 2034 3: no enhanced status on these replies)
    public static func helo(_ hostname: String) -> Reply { Reply(250, nil, hostname) }
    public static func ehlo(_ hostname: String, extensions: [String]) -> Reply {
        Reply(250, nil, [hostname] + extensions)
    }
    public static let badHeloName = Reply(501, EnhancedStatus(5, 5, 2), "Invalid hostname in HELO/EHLO")

    // MARK: STARTTLS (RFC 3207)
    public static let readyForTLS = Reply(220, EnhancedStatus(2, 0, 0), "Ready to start TLS")
    public static let tlsAlreadyActive = Reply(503, EnhancedStatus(5, 5, 1), "TLS already active")
    public static let tlsInTransaction = Reply(503, EnhancedStatus(5, 5, 1), "STARTTLS not allowed during a mail transaction")
    public static let tlsRequired = Reply(530, EnhancedStatus(5, 7, 0), "Must issue a STARTTLS command first")

    // MARK: AUTH (RFC 4954; RFC 5248 for the enhanced codes)
    public static func authChallenge(_ base64: String) -> Reply { Reply(334, nil, base64) }
    public static let authSucceeded = Reply(235, EnhancedStatus(2, 7, 0), "Authentication successful")
    public static let authFailed = Reply(535, EnhancedStatus(5, 7, 8), "Authentication credentials invalid")
    public static let authUnavailable = Reply(454, EnhancedStatus(4, 7, 0), "Temporary authentication failure")
    public static let authCancelled = Reply(501, EnhancedStatus(5, 0, 0), "Authentication cancelled")
    public static let authMalformed = Reply(501, EnhancedStatus(5, 5, 2), "Cannot decode response")
    public static let authUnknownMechanism = Reply(504, EnhancedStatus(5, 5, 4), "Unrecognized authentication type")
    public static let authNeedsTLS = Reply(538, EnhancedStatus(5, 7, 11), "Encryption required for requested authentication mechanism")
    public static let authAlready = Reply(503, EnhancedStatus(5, 5, 1), "Already authenticated")
    public static let authInTransaction = Reply(503, EnhancedStatus(5, 5, 1), "AUTH not permitted during a mail transaction")
    public static let authThrottled = Reply(421, EnhancedStatus(4, 7, 0), "Too many authentication failures, try again later")
    public static let senderNotOwned = Reply(553, EnhancedStatus(5, 7, 1), "Sender address not owned by the authenticated user")

    // MARK: MAIL / RCPT
    public static let senderOK = Reply(250, EnhancedStatus(2, 1, 0), "Sender OK")
    public static let recipientOK = Reply(250, EnhancedStatus(2, 1, 5), "Recipient OK")
    public static let badSenderSyntax = Reply(501, EnhancedStatus(5, 1, 7), "Bad sender address syntax")
    public static let badRecipientSyntax = Reply(501, EnhancedStatus(5, 1, 3), "Bad recipient address syntax")
    public static let badParameterSyntax = Reply(501, EnhancedStatus(5, 5, 4), "Syntax error in parameters")
    public static let unsupportedParameter = Reply(555, EnhancedStatus(5, 5, 4), "Unsupported parameter")
    public static let messageTooBig =
        Reply(552, EnhancedStatus(5, 3, 4), "Message size exceeds fixed maximum message size")
    public static let utf8NeedsSMTPUTF8 =
        Reply(553, EnhancedStatus(5, 6, 7), "Non-ASCII address requires the SMTPUTF8 parameter")
    public static let tooManyRecipients = Reply(452, EnhancedStatus(4, 5, 3), "Too many recipients")
    public static let relayDenied = Reply(550, EnhancedStatus(5, 7, 1), "Relaying denied")
    public static let mailLoops = Reply(550, EnhancedStatus(5, 4, 6), "Mail for this domain would loop back to this host")
    public static let noLocalMailboxes = Reply(550, EnhancedStatus(5, 1, 1), "No mailboxes on this host")

    // MARK: DATA
    public static let startData = Reply(354, nil, "End data with <CR><LF>.<CR><LF>")
    public static let noValidRecipients = Reply(554, EnhancedStatus(5, 5, 1), "No valid recipients")
    public static func queued(_ id: String) -> Reply { Reply(250, EnhancedStatus(2, 0, 0), "OK queued as \(id)") }
    public static let bareNewlineInData =
        Reply(554, EnhancedStatus(5, 5, 2), "Message refused: bare CR or LF; lines must end with CRLF")
    public static let nulInData = Reply(554, EnhancedStatus(5, 6, 0), "Message refused: NUL byte in message")
    public static let tooManyHops = Reply(554, EnhancedStatus(5, 4, 6), "Too many Received headers: mail loop suspected")
    public static let queueNoSpace = Reply(452, EnhancedStatus(4, 3, 1), "Insufficient system storage, try again later")
    public static let queueFailed = Reply(451, EnhancedStatus(4, 3, 0), "Local error in processing, try again later")
}
