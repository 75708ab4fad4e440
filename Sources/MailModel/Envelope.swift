/// DSN parameters of MAIL (RFC 3461 4.3, 4.4).
public enum DSNReturn: String, Sendable, Codable, Hashable { case full = "FULL", headers = "HDRS" }

/// BODY= of MAIL (RFC 6152); BINARYMIME is not offered.
public enum BodyType: String, Sendable, Codable, Hashable { case sevenBit = "7BIT", eightBitMIME = "8BITMIME" }

/// NOTIFY= of RCPT (RFC 3461 4.1): NEVER alone, or any of SUCCESS, FAILURE, DELAY.
public struct DSNNotify: Hashable, Sendable, Codable {
    public var never: Bool
    public var success: Bool
    public var failure: Bool
    public var delay: Bool
    public init(never: Bool = false, success: Bool = false, failure: Bool = false, delay: Bool = false) {
        self.never = never; self.success = success; self.failure = failure; self.delay = delay
    }
    public var keywords: [String] {
        if never { return ["NEVER"] }
        return [success ? "SUCCESS" : nil, failure ? "FAILURE" : nil, delay ? "DELAY" : nil].compactMap { $0 }
    }
}

/// ORCPT= of RCPT (RFC 3461 4.2): address type and the xtext-decoded original address.
public struct OriginalRecipient: Hashable, Sendable, Codable {
    public var addressType: String
    public var address: String
    public init(addressType: String, address: String) { self.addressType = addressType; self.address = address }
}

public struct Recipient: Hashable, Sendable {
    public var path: ForwardPath
    public var notify: DSNNotify?
    public var originalRecipient: OriginalRecipient?
    public init(path: ForwardPath, notify: DSNNotify? = nil, originalRecipient: OriginalRecipient? = nil) {
        self.path = path; self.notify = notify; self.originalRecipient = originalRecipient
    }
}

/// What MAIL and RCPT established: everything delivery and the bounce generator need.
public struct Envelope: Hashable, Sendable {
    public var sender: ReversePath
    public var recipients: [Recipient]
    public var declaredSize: Int?
    public var body: BodyType?
    public var smtpUTF8: Bool
    public var dsnReturn: DSNReturn?
    public var envelopeID: String?

    public init(sender: ReversePath, recipients: [Recipient] = [], declaredSize: Int? = nil,
                body: BodyType? = nil, smtpUTF8: Bool = false, dsnReturn: DSNReturn? = nil,
                envelopeID: String? = nil) {
        self.sender = sender; self.recipients = recipients; self.declaredSize = declaredSize
        self.body = body; self.smtpUTF8 = smtpUTF8; self.dsnReturn = dsnReturn; self.envelopeID = envelopeID
    }
}
