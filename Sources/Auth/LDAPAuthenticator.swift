import CLDAP
import Glibc
import MailModel
import Synchronization

/// LDAP (libldap): find the user's entry with a filter template (RFC 4515 escaping, exactly one entry),
/// optionally after a service bind, then bind as that entry with the password; or bind straight to a
/// DN built from a template (RFC 4514 escaping). Searches reuse connections; each user bind has a
/// connection of its own, closed at once, so no connection is ever left bound as a user.
public final class LDAPAuthenticator: Authenticator, @unchecked Sendable {
    public struct Settings: Sendable, Hashable {
        /// Tried in order (libldap fails over between them).
        public var uris: [String]
        public var startTLS = false
        public var caFile: String?
        public var bindDN: String?
        public var bindPassword: String?
        public var base: String?
        /// `(&(objectClass=inetOrgPerson)(uid=%u))`: `%u` is the escaped user name.
        public var filter: String?
        /// `uid=%u,ou=people,dc=example,dc=org`: bind without a search.
        public var dnTemplate: String?
        public var mailAttribute = "mail"
        public var timeoutSeconds = 5
        public init(uris: [String]) { self.uris = uris }
    }

    public let name: String
    public let settings: Settings
    /// Idle search connections, bound as the service account (or anonymous).
    let idle = Mutex<[LDAPHandle]>([])
    static let maxIdle = 8

    public init(name: String, settings: Settings) { self.name = name; self.settings = settings }

    public func authenticate(user: String, password: String, client: IPAddress) -> AuthOutcome {
        let dn: String
        var addresses: [String] = []
        if let template = settings.dnTemplate {
            dn = template.replacingPlaceholder(with: Self.escapeDNValue(user))
        } else {
            switch find(user) {
            case .failure(let outcome): return outcome
            case .success(let found): (dn, addresses) = found
            }
        }
        // The password check: a connection of its own, never returned to the pool.
        let conn: LDAPHandle
        switch connect() {
        case .failure(let o): return o
        case .success(let c): conn = c
        }
        let rc = password.withCString { rg_ldap_simple_bind(conn.ld, dn, $0, Int32(strlen($0))) }
        switch rc {
        case LDAP_SUCCESS:
            if settings.dnTemplate != nil { addresses = readMail(conn, dn: dn) }
            return .accepted(addresses: addresses)
        case LDAP_INVALID_CREDENTIALS, LDAP_INAPPROPRIATE_AUTH, LDAP_UNWILLING_TO_PERFORM, LDAP_NO_SUCH_OBJECT,
             LDAP_INVALID_DN_SYNTAX:
            return .rejected(reason: "ldap bind as \(dn): \(Self.message(rc))")
        default:
            return .unavailable(reason: "ldap bind: \(Self.message(rc))")
        }
    }

    enum Found { case success((String, [String])), failure(AuthOutcome) }

    /// The one entry the filter finds for `user`, and its mail values.
    func find(_ user: String) -> Found {
        guard let escaped = user.withCString({ rg_ldap_escape_filter_value($0, Int32(strlen($0))) }) else {
            return .failure(.rejected(reason: "user name cannot be escaped"))
        }
        let value = String(cString: escaped)
        ber_memfree(escaped)
        let filter = (settings.filter ?? "(uid=%u)").replacingPlaceholder(with: value)
        for attempt in 0..<2 {
            let conn: LDAPHandle
            switch checkout() {
            case .failure(let o): return .failure(o)
            case .success(let c): conn = c
            }
            var res: OpaquePointer?
            let rc = withAttributes([settings.mailAttribute]) { attrs in
                rg_ldap_search(conn.ld, settings.base ?? "", rg_LDAP_SCOPE_SUBTREE(), filter, attrs,
                               Int32(settings.timeoutSeconds), 2, &res)
            }
            defer { if let res { ldap_msgfree(res) } }
            if rc == LDAP_SERVER_DOWN || rc == LDAP_CONNECT_ERROR {
                // A pooled connection the server has since closed: one retry on a fresh one.
                if attempt == 0 { continue }
                return .failure(.unavailable(reason: "ldap search: \(Self.message(rc))"))
            }
            if rc == LDAP_SIZELIMIT_EXCEEDED {
                checkin(conn)
                return .failure(.rejected(reason: "ldap search for \(filter) found more than one entry"))
            }
            guard rc == LDAP_SUCCESS, let res else {
                return .failure(.unavailable(reason: "ldap search: \(Self.message(rc))"))
            }
            checkin(conn)
            let n = ldap_count_entries(conn.ld, res)
            guard n == 1, let entry = ldap_first_entry(conn.ld, res), let rawDN = ldap_get_dn(conn.ld, entry) else {
                return .failure(.rejected(reason: n == 0 ? "no entry for \(filter)" : "\(n) entries for \(filter)"))
            }
            let dn = String(cString: rawDN)
            ldap_memfree(rawDN)
            return .success((dn, values(conn, entry, settings.mailAttribute)))
        }
        return .failure(.unavailable(reason: "ldap search failed"))
    }

    /// The mail values of `dn`, read as the user just bound (dn-template mode).
    func readMail(_ conn: LDAPHandle, dn: String) -> [String] {
        var res: OpaquePointer?
        let rc = withAttributes([settings.mailAttribute]) { attrs in
            rg_ldap_search(conn.ld, dn, rg_LDAP_SCOPE_BASE(), "(objectClass=*)", attrs, Int32(settings.timeoutSeconds), 1, &res)
        }
        defer { if let res { ldap_msgfree(res) } }
        guard rc == LDAP_SUCCESS, let res, let entry = ldap_first_entry(conn.ld, res) else { return [] }
        return values(conn, entry, settings.mailAttribute)
    }

    func values(_ conn: LDAPHandle, _ entry: OpaquePointer, _ attribute: String) -> [String] {
        guard let vals = ldap_get_values_len(conn.ld, entry, attribute) else { return [] }
        defer { ldap_value_free_len(vals) }
        var out: [String] = []
        for i in 0..<Int(ldap_count_values_len(vals)) {
            guard let bv = vals[i], let data = rg_berval_data(bv) else { continue }
            let bytes = UnsafeRawBufferPointer(start: data, count: Int(rg_berval_len(bv)))
            out.append(String(decoding: bytes, as: UTF8.self))
        }
        return out
    }

    // MARK: Connections

    enum Connected { case success(LDAPHandle), failure(AuthOutcome) }

    func checkout() -> Connected {
        if let c = idle.withLock({ $0.popLast() }) { return .success(c) }
        let c: LDAPHandle
        switch connect() {
        case .failure(let o): return .failure(o)
        case .success(let h): c = h
        }
        if let dn = settings.bindDN {
            let rc = (settings.bindPassword ?? "").withCString { rg_ldap_simple_bind(c.ld, dn, $0, Int32(strlen($0))) }
            guard rc == LDAP_SUCCESS else {
                return .failure(.unavailable(reason: "ldap service bind as \(dn): \(Self.message(rc))"))
            }
        }
        return .success(c)
    }

    func checkin(_ c: LDAPHandle) {
        idle.withLock { if $0.count < Self.maxIdle { $0.append(c) } }
    }

    /// A new connection: LDAPv3, no referrals, bounded timeouts, StartTLS (RFC 4513 3) when asked, with
    /// the configured CA only.
    func connect() -> Connected {
        var ld: OpaquePointer?
        let rc = ldap_initialize(&ld, settings.uris.joined(separator: " "))
        guard rc == LDAP_SUCCESS, let ld else { return .failure(.unavailable(reason: "ldap_initialize: \(Self.message(rc))")) }
        let handle = LDAPHandle(ld)
        var version: Int32 = LDAP_VERSION3
        ldap_set_option(ld, LDAP_OPT_PROTOCOL_VERSION, &version)
        ldap_set_option(ld, LDAP_OPT_REFERRALS, nil)
        _ = rg_ldap_set_timeouts(ld, Int32(settings.timeoutSeconds))
        let secure = settings.startTLS || settings.uris.contains { $0.lowercased().hasPrefix("ldaps://") }
        if secure {
            var demand: Int32 = LDAP_OPT_X_TLS_DEMAND
            ldap_set_option(ld, LDAP_OPT_X_TLS_REQUIRE_CERT, &demand)
            if let ca = settings.caFile { ldap_set_option(ld, LDAP_OPT_X_TLS_CACERTFILE, ca) }
            var zero: Int32 = 0
            ldap_set_option(ld, LDAP_OPT_X_TLS_NEWCTX, &zero)
        }
        if settings.startTLS {
            let t = ldap_start_tls_s(ld, nil, nil)
            guard t == LDAP_SUCCESS else { return .failure(.unavailable(reason: "ldap StartTLS: \(Self.message(t))")) }
        }
        return .success(handle)
    }

    static func message(_ rc: Int32) -> String { "\(String(cString: ldap_err2string(rc))) (\(rc))" }

    /// RFC 4514 2.4: escape a value for use inside a DN.
    static func escapeDNValue(_ v: String) -> String {
        var out = ""
        let chars = Array(v.unicodeScalars)
        for (i, c) in chars.enumerated() {
            switch c {
            case ",", "+", "\"", "\\", "<", ">", ";", "=":
                out += "\\" + String(c)
            case "\0":
                out += "\\00"
            case " " where i == 0 || i == chars.count - 1:
                out += "\\ "
            case "#" where i == 0:
                out += "\\#"
            default:
                out.unicodeScalars.append(c)
            }
        }
        return out
    }

    func withAttributes<R>(_ names: [String], _ body: (UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> R) -> R {
        var cs: [UnsafeMutablePointer<CChar>?] = names.map { strdup($0) } + [nil]
        defer { for p in cs { free(p) } }
        return cs.withUnsafeMutableBufferPointer { body($0.baseAddress!) }
    }
}

/// One `LDAP*`, unbound and freed when the last reference goes. Used by one thread at a time.
final class LDAPHandle: @unchecked Sendable {
    let ld: OpaquePointer
    init(_ ld: OpaquePointer) { self.ld = ld }
    deinit { ldap_unbind_ext_s(ld, nil, nil) }
}

extension String {
    /// Replaces every `%u` with `value`.
    func replacingPlaceholder(with value: String) -> String {
        var out = ""
        var pendingPercent = false
        for c in self {
            if pendingPercent {
                pendingPercent = false
                if c == "u" { out += value; continue }
                out.append("%")
            }
            if c == "%" { pendingPercent = true } else { out.append(c) }
        }
        if pendingPercent { out.append("%") }
        return out
    }
}
