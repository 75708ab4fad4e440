import Auth
import PolicyLanguage
import SMTPProtocol

/// `pam NAME { }`, `ldap NAME { }`, `auth { }` and `senders NAME { }` (docs/policy-language.md,
/// "Authentication").
extension ConfigLoader {
    static let pamKeys = ["service", "confdir"]
    static let ldapKeys = ["uri", "starttls", "ca-file", "bind-dn", "bind-password", "bind-password-file", "base", "filter",
                           "dn-template", "mail-attribute", "timeout"]
    static let authKeys = ["backends", "mechanisms", "failure-delay", "client-failure-limit", "user-failure-limit", "failure-window",
                           "cool-off", "sender-binding", "senders"]

    mutating func backendName(_ d: Directive, _ auth: AuthOptions) -> String? {
        guard let a = d.arguments.first, d.arguments.count == 1 else {
            error(d.location, "write: \(d.name) NAME { ... }")
            return nil
        }
        if auth.backends[a.text] != nil {
            error(a.location, "authentication backend '\(a.text)' is defined twice")
            return nil
        }
        return a.text
    }

    mutating func pamBackend(_ d: Directive, _ auth: inout AuthOptions) {
        guard let name = backendName(d, auth) else { return }
        var service: String?
        var confdir: String?
        for e in block(d, keys: Self.pamKeys) {
            guard let a = single(e) else { continue }
            if e.name == "service" { service = a.text } else { confdir = reader.resolve(a.text, from: e.location.file) }
        }
        guard let service else {
            if d.block != nil { error(d.location, "pam '\(name)' needs: service NAME (a file in /etc/pam.d or confdir)") }
            return
        }
        let s = PAMAuthenticator.Settings(service: service, confdir: confdir)
        // Plain pam_start falls back to /etc/pam.d/other for a missing service: refuse that here.
        if reader.read(s.serviceFile) == nil {
            error(d.location, "pam '\(name)': cannot read the service file \(s.serviceFile)")
        }
        auth.backends[name] = .pam(s)
    }

    mutating func ldapBackend(_ d: Directive, _ auth: inout AuthOptions) {
        guard let name = backendName(d, auth) else { return }
        var s = LDAPAuthenticator.Settings(uris: [])
        for e in block(d, keys: Self.ldapKeys) {
            if e.name == "uri" {
                if e.arguments.isEmpty { error(e.location, "uri needs one or more ldap:// or ldaps:// URIs") }
                for a in e.arguments {
                    let l = a.text.lowercased()
                    if l.hasPrefix("ldap://") || l.hasPrefix("ldaps://") { s.uris.append(a.text) } else {
                        error(a.location, "'\(a.text)' is not an ldap:// or ldaps:// URI")
                    }
                }
                continue
            }
            guard let a = single(e) else { continue }
            switch e.name {
            case "starttls":
                if let b = boolean(a) { s.startTLS = b }
            case "ca-file": s.caFile = reader.resolve(a.text, from: e.location.file)
            case "bind-dn": s.bindDN = a.text
            case "bind-password": s.bindPassword = a.text
            case "bind-password-file":
                let path = reader.resolve(a.text, from: e.location.file)
                if let text = reader.read(path) {
                    s.bindPassword = String(text.split(separator: "\n", omittingEmptySubsequences: false).first ?? "")
                } else {
                    error(a.location, "cannot read the bind password file \(path)")
                }
            case "base": s.base = a.text
            case "filter":
                if !a.text.contains("%u") { error(a.location, "the filter must hold %u, the user name") }
                if !(a.text.hasPrefix("(") && a.text.hasSuffix(")")) { error(a.location, "a filter is written in parentheses: (uid=%u)") }
                s.filter = a.text
            case "dn-template":
                if !a.text.contains("%u") { error(a.location, "the DN template must hold %u, the user name") }
                s.dnTemplate = a.text
            case "mail-attribute": s.mailAttribute = a.text
            default:  // timeout
                if let t = duration(e) {
                    let secs = Int(t.components.seconds)
                    if secs < 1 || secs > 120 { error(a.location, "timeout must be between 1s and 120s") } else { s.timeoutSeconds = secs }
                }
            }
        }
        guard d.block != nil else { return }
        if s.uris.isEmpty { error(d.location, "ldap '\(name)' needs: uri \"ldap://HOST:PORT\"") }
        if s.filter != nil && s.dnTemplate != nil {
            error(d.location, "ldap '\(name)': write either filter (with base) or dn-template, not both")
        } else if s.filter == nil && s.dnTemplate == nil {
            error(d.location, "ldap '\(name)' needs a filter \"(uid=%u)\" with a base, or a dn-template \"uid=%u,...\"")
        } else if s.filter != nil && s.base == nil {
            error(d.location, "ldap '\(name)': a filter needs a base \"ou=people,dc=example,dc=org\"")
        }
        if s.bindDN != nil && (s.bindPassword ?? "").isEmpty {
            error(d.location, "ldap '\(name)': bind-dn needs a bind-password-file (an empty password binds anonymously)")
        }
        auth.backends[name] = .ldap(s)
    }

    mutating func authBlock(_ d: Directive, _ auth: inout AuthOptions) {
        for e in block(d, keys: Self.authKeys) {
            switch e.name {
            case "mechanisms":
                var ms: [SASLMechanism] = []
                for a in e.arguments {
                    if let m = SASLMechanism(rawValue: a.text.uppercased()) { ms.append(m) } else {
                        error(a.location, "unknown mechanism '\(a.text)': PLAIN or LOGIN")
                    }
                }
                if e.arguments.isEmpty { error(e.location, "mechanisms needs PLAIN, LOGIN or both") }
                auth.mechanisms = ms
            case "backends":
                if e.arguments.isEmpty { error(e.location, "backends needs the names of one or more backends") }
                auth.defaultBackends = e.arguments.map(\.text)
                for a in e.arguments { pendingBackendChecks.append((a.text, a.location)) }
            case "failure-delay":
                if let t = duration(e) { auth.failureDelay = t }
            case "client-failure-limit":
                if let n = integer(e, range: 1...10_000) { auth.throttle.clientLimit = n }
            case "user-failure-limit":
                if let n = integer(e, range: 1...10_000) { auth.throttle.userLimit = n }
            case "failure-window":
                if let t = duration(e) { auth.throttle.window = t }
            case "cool-off":
                if let t = duration(e) { auth.throttle.coolOff = t }
            case "sender-binding":
                if let a = single(e), let b = boolean(a) { auth.senderBinding = b }
            default:  // senders
                if let a = single(e) {
                    auth.sendersList = a.text
                    pendingSendersCheck = a
                }
            }
        }
    }

    /// `senders NAME { user address... }` or `senders NAME file "PATH"` (one user and their addresses a line).
    mutating func sendersList(_ d: Directive, _ auth: inout AuthOptions, _ lists: inout NamedLists) {
        guard let nameArg = d.arguments.first else {
            error(d.location, "write: senders NAME { USER ADDRESS... } or senders NAME file \"PATH\"")
            return
        }
        if let previous = lists.locations[nameArg.text] {
            error(nameArg.location, "'\(nameArg.text)' is already defined as a \(previous.kind) list (line \(previous.at.line))")
            return
        }
        lists.locations[nameArg.text] = (d.name, nameArg.location)
        var rows: [(String, [(String, SourceLocation)])] = []
        if let block = d.block {
            for e in block { rows.append((e.name, e.arguments.map { ($0.text, $0.location) })) }
        } else if d.arguments.count == 3, d.arguments[1].text == "file" {
            let path = reader.resolve(d.arguments[2].text, from: d.location.file)
            guard let text = reader.read(path) else {
                error(d.arguments[2].location, "cannot read list file \(path)")
                return
            }
            for (n, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
                var line = Substring(raw)
                if let hash = line.firstIndex(of: "#") { line = line[..<hash] }
                let words = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
                guard let user = words.first else { continue }
                let at = SourceLocation(file: path, line: n + 1, column: 1)
                rows.append((String(user), words.dropFirst().map { (String($0), at) }))
            }
        } else {
            error(d.location, "write: senders NAME { USER ADDRESS... } or senders NAME file \"PATH\"")
            return
        }
        var map: [String: [String]] = [:]
        for (user, entries) in rows {
            if entries.isEmpty { error(entries.first?.1 ?? d.location, "user '\(user)' has no sender addresses") }
            for (text, at) in entries {
                let parts = text.split(separator: "@", omittingEmptySubsequences: false)
                guard parts.count >= 2, !(parts.last ?? "").isEmpty else {
                    error(at, "'\(text)' is not an address or @domain")
                    continue
                }
                map[user, default: []].append(text)
            }
        }
        auth.senderLists[nameArg.text] = map
    }

    mutating func boolean(_ a: Argument) -> Bool? {
        switch a.text.lowercased() {
        case "yes", "on", "true": return true
        case "no", "off", "false": return false
        default:
            error(a.location, "'\(a.text)' is not yes or no")
            return nil
        }
    }

    /// Listeners name backends that must exist; a listener that could never offer AUTH is worth a word.
    mutating func checkListenerAuth(_ c: Configuration) {
        for (name, at) in pendingBackendChecks where c.auth.backends[name] == nil {
            var message = "no authentication backend named '\(name)': define it with pam \(name) { } or ldap \(name) { }"
            if let hint = Self.nearest(name, in: Array(c.auth.backends.keys)) { message += "; did you mean '\(hint)'?" }
            error(at, message)
        }
        for (l, at) in pendingAuthListeners {
            guard let listener = c.listeners.first(where: { $0.name == l }), !c.authBackends(of: listener).isEmpty else {
                continue
            }
            if listener.authWithoutTLS {
                warning(at, "listener '\(l)' accepts passwords without TLS (auth-without-tls yes)")
            } else if c.tlsMode(of: listener) == .none {
                warning(at, "listener '\(l)' has no TLS, so AUTH is never offered there; add a certificate or tls may")
            }
        }
        if let a = pendingSendersCheck, c.auth.senderLists[a.text] == nil {
            error(a.location, "no senders list named '\(a.text)': define it with senders \(a.text) { USER ADDRESS... }")
        }
    }
}
