import COpenSSL
import Glibc

/// Server-side TLS settings for one listener: certificates (the first is the default, the others are
/// chosen by SNI), TLS 1.2 at least, and the named CAs a client certificate is checked against.
public final class TLSServerContext: @unchecked Sendable {
    public struct CertificateFiles: Sendable, Hashable {
        public let chain: String
        public let key: String
        public init(chain: String, key: String) { self.chain = chain; self.key = key }
    }

    struct Served { let ctx: OpaquePointer; let names: [String] }
    let served: [Served]
    /// Named CA stores: a client certificate is verified against each; the names that verify become facts.
    let authorities: [(name: String, store: OpaquePointer)]
    public let requestClientCertificate: Bool

    /// - Throws: `TLSError` naming the file and the problem (unreadable, key readable by others,
    ///   key not matching the certificate, bad CA file).
    public init(certificates: [CertificateFiles], authorities: [(name: String, file: String)] = [],
                requestClientCertificate: Bool = false) throws(TLSError) {
        guard !certificates.isEmpty else { throw TLSError("no certificate configured") }
        var served: [Served] = []
        for files in certificates {
            served.append(try Self.makeContext(files, requestClientCertificate: requestClientCertificate))
        }
        var stores: [(String, OpaquePointer)] = []
        for (name, file) in authorities {
            stores.append((name, try PeerCertificateAuthority.load(name: name, file: file)))
        }
        self.served = served
        self.authorities = stores
        self.requestClientCertificate = requestClientCertificate
        if served.count > 1 {
            let me = Unmanaged.passUnretained(self).toOpaque()
            for s in served {
                rg_SSL_CTX_set_tlsext_servername_callback(s.ctx, TLSServerContext.serverNameCallback)
                rg_SSL_CTX_set_tlsext_servername_arg(s.ctx, me)
            }
        }
    }

    deinit {
        for s in served { SSL_CTX_free(s.ctx) }
        for a in authorities { X509_STORE_free(a.store) }
    }

    public func makeSession() -> TLSSession? { TLSSession(context: self) }

    static func makeContext(_ files: CertificateFiles, requestClientCertificate: Bool) throws(TLSError) -> Served {
        var st = stat()
        guard stat(files.key, &st) == 0 else { throw TLSError("private key \(files.key): \(String(cString: strerror(errno)))") }
        if st.st_mode & 0o004 != 0 {
            throw TLSError("private key \(files.key) is readable by others (mode \(String(st.st_mode & 0o777, radix: 8))); chmod o-r it")
        }
        guard let method = TLS_server_method(), let ctx = SSL_CTX_new(method) else { throw TLSError("SSL_CTX_new: \(OpenSSLErrors.drain())") }
        _ = rg_SSL_CTX_set_min_proto_version(ctx, rg_TLS1_2_VERSION())
        SSL_CTX_set_options(ctx, rg_SSL_OP_NO_COMPRESSION() | rg_SSL_OP_NO_RENEGOTIATION() | rg_SSL_OP_CIPHER_SERVER_PREFERENCE())
        _ = rg_SSL_CTX_set_mode(ctx, rg_SSL_MODE_RELEASE_BUFFERS())
        _ = rg_SSL_CTX_set_session_cache_mode(ctx, rg_SSL_SESS_CACHE_SERVER())
        var sid: [UInt8] = Array("relaygate".utf8)
        SSL_CTX_set_session_id_context(ctx, &sid, UInt32(sid.count))
        guard SSL_CTX_use_certificate_chain_file(ctx, files.chain) == 1 else {
            let e = OpenSSLErrors.drain(); SSL_CTX_free(ctx)
            throw TLSError("certificate \(files.chain): \(e)")
        }
        guard SSL_CTX_use_PrivateKey_file(ctx, files.key, SSL_FILETYPE_PEM) == 1 else {
            let e = OpenSSLErrors.drain(); SSL_CTX_free(ctx)
            throw TLSError("private key \(files.key): \(e)")
        }
        guard SSL_CTX_check_private_key(ctx) == 1 else {
            SSL_CTX_free(ctx)
            throw TLSError("private key \(files.key) does not match certificate \(files.chain)")
        }
        if requestClientCertificate {
            // Ask, never require at the TLS level: a missing or bad certificate fails nothing and
            // grants nothing; the policy decides on what verified (see PeerCertificate).
            SSL_CTX_set_verify(ctx, rg_SSL_VERIFY_PEER(), { _, _ in 1 })
        }
        var names: [String] = []
        if let x = SSL_CTX_get0_certificate(ctx) {
            X509_up_ref(x)
            names = Certificate(owning: x).dnsNames
        }
        return Served(ctx: ctx, names: names)
    }

    /// SNI (RFC 6066): switch to the certificate that serves the requested name, if any.
    static let serverNameCallback: rg_servername_cb = { ssl, _, arg in
        guard let ssl, let arg, let raw = SSL_get_servername(ssl, rg_TLSEXT_NAMETYPE_host_name()) else {
            return rg_SSL_TLSEXT_ERR_OK()
        }
        let me = Unmanaged<TLSServerContext>.fromOpaque(arg).takeUnretainedValue()
        let name = String(cString: raw).lowercased()
        if let match = me.served.first(where: { $0.names.contains { TLSServerContext.matches(pattern: $0, name: name) } }) {
            SSL_set_SSL_CTX(ssl, match.ctx)
        }
        return rg_SSL_TLSEXT_ERR_OK()
    }

    static func matches(pattern: String, name: String) -> Bool {
        if pattern == name { return true }
        if pattern.hasPrefix("*."), let dot = name.firstIndex(of: ".") { return name[dot...] == pattern.dropFirst() }
        return false
    }

    /// Checks the peer's chain against each named CA (never the system bundle).
    func verify(_ leaf: OpaquePointer, chain: OpaquePointer?) -> (Set<String>, [String]) {
        Self.verify(leaf, chain: chain, stores: authorities.map { ($0.name, $0.store) })
    }

    static func verify(_ leaf: OpaquePointer, chain: OpaquePointer?, stores: [(String, OpaquePointer)]) -> (Set<String>, [String]) {
        var ok = Set<String>(), failures: [String] = []
        for (name, store) in stores {
            guard let sctx = X509_STORE_CTX_new() else { continue }
            defer { X509_STORE_CTX_free(sctx) }
            X509_STORE_CTX_init(sctx, store, leaf, chain)
            if X509_verify_cert(sctx) == 1 {
                ok.insert(name)
            } else {
                failures.append("\(name): \(String(cString: X509_verify_cert_error_string(Int(X509_STORE_CTX_get_error(sctx)))))")
            }
        }
        if stores.isEmpty { failures.append("no CA configured to verify client certificates") }
        return (ok, failures)
    }
}

extension PeerCertificate {
    /// The facts the server would take from this certificate (leaf first, then any chain in the same
    /// file), verified against the named CA files: what `relaygate explain --cert` shows.
    public static func load(pemFile: String, authorities: [(name: String, file: String)]) throws(TLSError) -> PeerCertificate {
        guard let bio = BIO_new_file(pemFile, "r") else { throw TLSError("cannot read \(pemFile): \(OpenSSLErrors.drain())") }
        defer { BIO_free(bio) }
        guard let leaf = PEM_read_bio_X509(bio, nil, nil, nil) else {
            throw TLSError("\(pemFile) holds no PEM certificate: \(OpenSSLErrors.drain())")
        }
        let cert = Certificate(owning: leaf)
        var chain: [Certificate] = []
        while let x = PEM_read_bio_X509(bio, nil, nil, nil) { chain.append(Certificate(owning: x)) }
        ERR_clear_error()
        let stack = OPENSSL_sk_new_null()
        defer { OPENSSL_sk_free(stack) }
        for c in chain { OPENSSL_sk_push(stack, UnsafeRawPointer(c.x509)) }
        var stores: [(String, OpaquePointer)] = []
        defer { for (_, s) in stores { X509_STORE_free(s) } }
        for (name, file) in authorities {
            stores.append((name, try PeerCertificateAuthority.load(name: name, file: file)))
        }
        let (ok, failures) = TLSServerContext.verify(leaf, chain: stack, stores: stores)
        return PeerCertificate(spkiSHA256: cert.spkiSHA256, subject: cert.subject, subjectAltNames: cert.subjectAltNames,
                               verifiedBy: ok, verificationFailures: failures)
    }
}

/// A named CA file, checked the way a listener would load it.
public enum PeerCertificateAuthority {
    public static func check(name: String, file: String) throws(TLSError) {
        X509_STORE_free(try load(name: name, file: file))
    }

    /// An X509_STORE holding the file's certificates; the caller frees it.
    static func load(name: String, file: String) throws(TLSError) -> OpaquePointer {
        guard let store = X509_STORE_new() else { throw TLSError("out of memory") }
        if X509_STORE_load_locations(store, file, nil) != 1 {
            X509_STORE_free(store)
            throw TLSError("CA file \(file) for '\(name)': \(OpenSSLErrors.drain())")
        }
        return store
    }
}
