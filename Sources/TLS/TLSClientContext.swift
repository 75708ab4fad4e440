import COpenSSL

/// Outbound TLS (delivery): TLS 1.2 at least. `verify` checks the chain against the system's CA
/// store (or `caFile`) and the host name; without it the session is encrypted but unauthenticated,
/// which is what opportunistic STARTTLS (`may`, `encrypt`) means for SMTP (RFC 7435).
public final class TLSClientContext: @unchecked Sendable {
    let ctx: OpaquePointer
    public let verify: Bool

    public init(verify: Bool, caFile: String? = nil) throws(TLSError) {
        guard let method = TLS_client_method(), let c = SSL_CTX_new(method) else { throw TLSError("SSL_CTX_new: \(OpenSSLErrors.drain())") }
        ctx = c
        self.verify = verify
        _ = rg_SSL_CTX_set_min_proto_version(c, rg_TLS1_2_VERSION())
        SSL_CTX_set_options(c, rg_SSL_OP_NO_COMPRESSION() | rg_SSL_OP_NO_RENEGOTIATION())
        if verify {
            let ok = caFile.map { SSL_CTX_load_verify_locations(c, $0, nil) } ?? SSL_CTX_set_default_verify_paths(c)
            if ok != 1 { SSL_CTX_free(c); throw TLSError("CA store: \(OpenSSLErrors.drain())") }
            SSL_CTX_set_verify(c, rg_SSL_VERIFY_PEER(), nil)
        } else {
            SSL_CTX_set_verify(c, rg_SSL_VERIFY_NONE(), nil)
        }
    }

    deinit { SSL_CTX_free(ctx) }

    /// A context for DANE (RFC 7672): the peer is authenticated by the TLSA records alone.
    public static func dane() throws(TLSError) -> TLSClientContext {
        let c = try TLSClientContext(verify: false)
        guard SSL_CTX_dane_enable(c.ctx) > 0 else { throw TLSError("SSL_CTX_dane_enable: \(OpenSSLErrors.drain())") }
        SSL_CTX_set_verify(c.ctx, rg_SSL_VERIFY_PEER(), nil)
        return c
    }

    /// A DANE session: `records` are (usage, selector, matching type, data) of usages 2 and 3 only
    /// (RFC 7672 3.1: PKIX usages are not for SMTP). nil when no record could be used.
    public func makeDANESession(serverName: String, records: [(UInt8, UInt8, UInt8, [UInt8])]) -> TLSSession? {
        guard let t = TLSSession(client: ctx, serverName: serverName, verifyName: false) else { return nil }
        guard SSL_dane_enable(t.ssl, serverName) > 0 else { return nil }
        _ = rg_SSL_dane_no_ee_namechecks(t.ssl)
        var usable = 0
        for (usage, selector, mtype, data) in records where usage == 2 || usage == 3 {
            let rc = data.withUnsafeBufferPointer { SSL_dane_tlsa_add(t.ssl, usage, selector, mtype, $0.baseAddress, $0.count) }
            if rc > 0 { usable += 1 }
        }
        ERR_clear_error()
        return usable > 0 ? t : nil
    }

    /// A session for one connection to `serverName` (an MX host name; `[addr]` for literals: no SNI).
    public func makeSession(serverName: String?) -> TLSSession? {
        TLSSession(client: ctx, serverName: serverName, verifyName: verify)
    }
}
