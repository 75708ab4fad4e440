import COpenSSL
import Glibc

/// One connection's TLS, over memory BIOs: feed it what came from the socket, send what it returns.
public final class TLSSession: @unchecked Sendable {
    let ssl: OpaquePointer
    let readBIO: OpaquePointer
    let writeBIO: OpaquePointer
    /// The server side checks client certificates against its CAs; the client side has none.
    let context: TLSServerContext?
    /// Client side: the name the server's certificate must match (when verifying).
    public let peerName: String?
    public private(set) var handshakeComplete = false
    public private(set) var info: TLSInfo?

    public enum Event: Sendable {
        /// Decrypted application data.
        case data([UInt8])
        case established(TLSInfo)
        /// The handshake or the record layer failed; the connection must close.
        case failed(String)
        /// The peer sent close_notify.
        case closed
    }

    init?(context: TLSServerContext) {
        guard let s = SSL_new(context.served[0].ctx), let r = BIO_new(BIO_s_mem()), let w = BIO_new(BIO_s_mem()) else { return nil }
        ssl = s; readBIO = r; writeBIO = w
        self.context = context
        peerName = nil
        SSL_set_bio(ssl, readBIO, writeBIO)   // the SSL now owns both BIOs
        SSL_set_accept_state(ssl)
    }

    /// The client side: SNI and (when the context verifies) the host name check (RFC 6125).
    init?(client ctx: OpaquePointer, serverName: String?, verifyName: Bool) {
        guard let s = SSL_new(ctx), let r = BIO_new(BIO_s_mem()), let w = BIO_new(BIO_s_mem()) else { return nil }
        ssl = s; readBIO = r; writeBIO = w
        context = nil
        peerName = serverName
        SSL_set_bio(ssl, readBIO, writeBIO)
        SSL_set_connect_state(ssl)
        if let name = serverName, !name.hasPrefix("[") {
            _ = rg_SSL_set_tlsext_host_name(ssl, name)
            if verifyName { SSL_set1_host(ssl, name) }
        }
    }

    /// Client side: starts the handshake (the ClientHello goes into the output).
    public func connect() -> [Event] { receive([][...]) }

    /// Client side, after a DANE handshake: true when a TLSA record matched the server's chain.
    public var daneAuthenticated: Bool {
        SSL_get_verify_result(ssl) == 0 && SSL_get0_dane_authority(ssl, nil, nil) >= 0
    }

    /// Client side, after the handshake: nil when the server's certificate verified (chain to the
    /// system store, and the name), else why not.
    public var verificationError: String? {
        let r = SSL_get_verify_result(ssl)
        return r == 0 ? nil : String(cString: X509_verify_cert_error_string(r))
    }

    deinit { SSL_free(ssl) }

    /// Ciphertext in; events (handshake done, plaintext, failure) out. Then send `takeOutput()`.
    public func receive(_ ciphertext: ArraySlice<UInt8>) -> [Event] {
        var events: [Event] = []
        Self.writeAll(ciphertext) { BIO_write(readBIO, $0, $1) }
        if !handshakeComplete {
            ERR_clear_error()
            let r = SSL_do_handshake(ssl)
            if r == 1 {
                handshakeComplete = true
                let i = makeInfo()
                info = i
                events.append(.established(i))
            } else {
                let e = SSL_get_error(ssl, r)
                if e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE {
                    events.append(.failed(OpenSSLErrors.drain()))
                    return events
                }
                return events
            }
        }
        var plain: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 16384)
        while true {
            ERR_clear_error()
            let n = SSL_read(ssl, &buf, Int32(buf.count))
            if n > 0 {
                plain.append(contentsOf: buf[0..<Int(n)])
                continue
            }
            let e = SSL_get_error(ssl, n)
            if e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE { break }
            if !plain.isEmpty { events.append(.data(plain)); plain = [] }
            events.append(e == SSL_ERROR_ZERO_RETURN ? .closed : .failed(OpenSSLErrors.drain()))
            return events
        }
        if !plain.isEmpty { events.append(.data(plain)) }
        return events
    }

    /// Plaintext in; it is encrypted into the output (memory BIOs never block).
    public func send(_ plaintext: [UInt8]) {
        guard !plaintext.isEmpty else { return }
        Self.writeAll(plaintext[...]) { SSL_write(ssl, $0, $1) }
    }

    /// Feeds `bytes` to an OpenSSL write call until all are taken (memory BIOs take everything) or it fails.
    static func writeAll(_ bytes: ArraySlice<UInt8>, _ write: (UnsafeRawPointer, Int32) -> Int32) {
        bytes.withUnsafeBytes { raw in
            var off = 0
            while off < raw.count {
                let n = write(raw.baseAddress! + off, Int32(raw.count - off))
                if n <= 0 { break }
                off += Int(n)
            }
        }
    }

    /// Queues close_notify (RFC 8446 6.1) so the peer sees a clean end rather than a truncation.
    public func shutdown() {
        guard handshakeComplete else { return }
        ERR_clear_error()
        _ = SSL_shutdown(ssl)
    }

    /// Ciphertext to put on the wire.
    public func takeOutput() -> [UInt8] {
        let n = rg_BIO_pending(writeBIO)
        guard n > 0 else { return [] }
        var out = [UInt8](repeating: 0, count: n)
        let got = BIO_read(writeBIO, &out, Int32(n))
        return Array(out.prefix(max(0, Int(got))))
    }

    func makeInfo() -> TLSInfo {
        let version = String(cString: SSL_get_version(ssl))
        let cipher = SSL_get_current_cipher(ssl).map { String(cString: SSL_CIPHER_get_name($0)) } ?? "unknown"
        let sni = SSL_get_servername(ssl, rg_TLSEXT_NAMETYPE_host_name()).map { String(cString: $0) }
        var peer: PeerCertificate?
        if let x = SSL_get1_peer_certificate(ssl) {
            let cert = Certificate(owning: x)
            let (ok, failures) = context?.verify(x, chain: SSL_get_peer_cert_chain(ssl)) ?? ([], [])
            peer = PeerCertificate(spkiSHA256: cert.spkiSHA256, subject: cert.subject, subjectAltNames: cert.subjectAltNames,
                                   verifiedBy: ok, verificationFailures: failures)
        }
        return TLSInfo(version: version, cipher: cipher, serverName: sni, peer: peer)
    }
}
