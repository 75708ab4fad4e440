import COpenSSL
import Glibc

/// An X509 certificate owned by Swift.
final class Certificate: @unchecked Sendable {
    let x509: OpaquePointer
    init(owning x509: OpaquePointer) { self.x509 = x509 }
    deinit { X509_free(x509) }

    /// SHA-256 of the DER SubjectPublicKeyInfo, lowercase hex (what `pins` hold).
    var spkiSHA256: String {
        guard let pub = X509_get_X509_PUBKEY(x509) else { return "" }
        var der: UnsafeMutablePointer<UInt8>? = nil
        let n = i2d_X509_PUBKEY(pub, &der)
        guard n > 0, let der else { return "" }
        defer { rg_OPENSSL_free(der) }
        var md = [UInt8](repeating: 0, count: 32)
        var len: UInt32 = 0
        EVP_Digest(der, Int(n), &md, &len, EVP_sha256(), nil)
        return md.prefix(Int(len)).map { String(format2: $0) }.joined()
    }

    var subject: String {
        guard let name = X509_get_subject_name(x509), let bio = BIO_new(BIO_s_mem()) else { return "" }
        defer { BIO_free(bio) }
        X509_NAME_print_ex(bio, name, 0, UInt(rg_XN_FLAG_RFC2253()))
        return Self.read(bio)
    }

    /// DNS names, e-mail addresses and IP addresses from subjectAltName.
    var subjectAltNames: [String] {
        guard let raw = X509_get_ext_d2i(x509, NID_subject_alt_name, nil, nil) else { return [] }
        let names = OpaquePointer(raw)
        defer { rg_san_free(names) }
        var out: [String] = []
        for i in 0..<rg_san_count(names) {
            guard let n = rg_san_at(names, i) else { continue }
            let type = rg_general_name_type(n)
            if type == rg_GEN_DNS() || type == rg_GEN_EMAIL(), let s = rg_general_name_string(n),
               let data = ASN1_STRING_get0_data(s) {
                out.append(String(decoding: UnsafeBufferPointer(start: data, count: Int(ASN1_STRING_length(s))), as: UTF8.self))
            }
        }
        return out
    }

    /// DNS names this certificate serves (SANs, else the subject CN), for SNI.
    var dnsNames: [String] {
        let sans = subjectAltNames.filter { !$0.contains("@") }
        if !sans.isEmpty { return sans.map { $0.lowercased() } }
        for part in subject.split(separator: ",") where part.hasPrefix("CN=") {
            return [String(part.dropFirst(3)).lowercased()]
        }
        return []
    }

    static func read(_ bio: OpaquePointer) -> String {
        let n = rg_BIO_pending(bio)
        var buf = [UInt8](repeating: 0, count: n)
        let got = BIO_read(bio, &buf, Int32(n))
        return String(decoding: buf.prefix(max(0, Int(got))), as: UTF8.self)
    }
}

extension String {
    init(format2 b: UInt8) {
        let h = Array("0123456789abcdef")
        self = String([h[Int(b >> 4)], h[Int(b & 15)]])
    }
}
