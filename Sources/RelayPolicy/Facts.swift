import MailModel

/// What the TLS layer learned about a client certificate.
public struct CertificateFacts: Sendable, Hashable {
    /// SHA-256 of the DER SubjectPublicKeyInfo, lowercase hex.
    public var spkiSHA256: String
    public var subject: String?
    public var subjectAltNames: [String]
    /// Names of the configured CAs the chain verified against (empty: not verified).
    public var verifiedBy: Set<String>

    /// `sha256:HEX` (64 hex digits, any case) as lowercase hex: how pins are written in lists,
    /// case files and on the command line.
    public static func parsePin(_ text: String) -> String? {
        guard text.lowercased().hasPrefix("sha256:") else { return nil }
        let hex = text.dropFirst(7).lowercased()
        return hex.count == 64 && hex.allSatisfy(\.isHexDigit) ? String(hex) : nil
    }

    public init(spkiSHA256: String, subject: String? = nil, subjectAltNames: [String] = [], verifiedBy: Set<String> = []) {
        self.spkiSHA256 = spkiSHA256.lowercased(); self.subject = subject
        self.subjectAltNames = subjectAltNames; self.verifiedBy = verifiedBy
    }
}

/// The facts of a session that a relay decision may use.
public struct SessionFacts: Sendable, Hashable {
    public var listener: String
    public var client: IPAddress
    public var heloName: String?
    public var tls: Bool
    public var certificate: CertificateFacts?
    public var authenticatedUser: String?

    public init(listener: String, client: IPAddress, heloName: String? = nil, tls: Bool = false,
                certificate: CertificateFacts? = nil, authenticatedUser: String? = nil) {
        self.listener = listener; self.client = client; self.heloName = heloName; self.tls = tls
        self.certificate = certificate; self.authenticatedUser = authenticatedUser
    }
}

/// One recipient to decide, with its session.
public struct RelayQuery: Sendable, Hashable {
    public var session: SessionFacts
    public var sender: ReversePath
    public var recipient: ForwardPath
    public init(session: SessionFacts, sender: ReversePath, recipient: ForwardPath) {
        self.session = session; self.sender = sender; self.recipient = recipient
    }
}
