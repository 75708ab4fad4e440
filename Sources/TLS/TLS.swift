import RelayPolicy

/// TLS: the only OpenSSL user. `TLSServerContext` holds certificates, keys (checked for safe
/// permissions), protocol floor, SNI and the CAs client certificates are checked against;
/// `TLSSession` runs one connection's TLS over memory BIOs, so the socket code stays the same and
/// nothing here blocks: ciphertext in, plaintext out, and back.
///
/// Every `SSL*`/`SSL_CTX*` is owned by a final class whose deinit frees it. OpenSSL's error queue is
/// per thread; it is read right after the failing call, on the loop thread that made it.
public enum TLS {}

public struct TLSError: Error, CustomStringConvertible, Sendable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// What a finished handshake established, for the session, the policy and `Received:`.
public struct TLSInfo: Sendable, Hashable {
    public let version: String       // "TLSv1.3"
    public let cipher: String        // "TLS_AES_256_GCM_SHA384"
    public let serverName: String?
    public let peer: PeerCertificate?
}

/// A client certificate as the policy sees it.
public struct PeerCertificate: Sendable, Hashable {
    public let spkiSHA256: String
    public let subject: String
    public let subjectAltNames: [String]
    /// Names of the configured CAs the chain verified against.
    public let verifiedBy: Set<String>
    /// Why each configured CA did not verify it (for the log): "corp: certificate has expired".
    public let verificationFailures: [String]
}

extension PeerCertificate {
    /// What the relay policy may match on: the same for the server and for `relaygate explain --cert`.
    public var facts: CertificateFacts {
        CertificateFacts(spkiSHA256: spkiSHA256, subject: subject, subjectAltNames: subjectAltNames, verifiedBy: verifiedBy)
    }
}
