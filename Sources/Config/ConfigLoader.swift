import MailModel
import PolicyLanguage

/// Builds a `Configuration` from directives, collecting every problem with its location.
public struct ConfigLoader {
    public private(set) var diagnostics: [Diagnostic] = []
    let reader: any SourceReader
    /// Checked once the whole file is read (CAs and certificates may come after the listener).
    var pendingAuthorityChecks: [Argument] = []
    var pendingTLSChecks: [(String, SourceLocation)] = []
    var pendingBackendChecks: [(String, SourceLocation)] = []
    var pendingAuthListeners: [(String, SourceLocation)] = []
    var pendingSendersCheck: Argument?

    public init(reader: any SourceReader = FileSourceReader()) { self.reader = reader }

    /// Parses and interprets `path`; diagnostics from both steps, sorted by location.
    public static func load(path: String, reader: any SourceReader = FileSourceReader())
        -> (Configuration, [Diagnostic])
    {
        var parser = Parser(reader: reader)
        let directives = parser.parseFile(path)
        var loader = ConfigLoader(reader: reader)
        let config = loader.interpret(directives)
        return (config, (parser.diagnostics + loader.diagnostics).sorted { $0.location < $1.location })
    }

    public static func load(text: String, file: String, reader: any SourceReader = FileSourceReader())
        -> (Configuration, [Diagnostic])
    {
        var parser = Parser(reader: reader)
        let directives = parser.parse(text: text, file: file)
        var loader = ConfigLoader(reader: reader)
        let config = loader.interpret(directives)
        return (config, (parser.diagnostics + loader.diagnostics).sorted { $0.location < $1.location })
    }

    static let topLevel = ["hostname", "spool", "listener", "limits", "smtp", "queue", "include",
                           "networks", "domains", "users", "pins", "ca", "rules", "local-names", "allow-untrusted-routing", "tls",
                           "pam", "ldap", "auth", "senders",
                           "dns", "outbound", "route", "rewrite"]
    static let limitKeys = ["message-size", "recipients", "errors", "command-line", "text-line", "sessions",
                            "sessions-per-client", "command-timeout", "data-timeout", "received-headers",
                            "shutdown-timeout"]
    static let smtpKeys = ["greeting-delay", "normalize-bare-lf"]
    static let listenerKeys = ["address", "tls", "client-certificates", "auth", "auth-without-tls"]
    static let tlsKeys = ["certificate"]
    static let queueKeys = ["writers", "delivery-threads", "per-destination", "recipients-per-transaction", "retry-first",
                             "retry-max", "lifetime", "connect-timeout", "reply-timeout", "data-timeout", "backoff",
                             "scan-interval", "connection-reuse", "connection-idle", "delay-warning"]

    public mutating func interpret(_ directives: [Directive]) -> Configuration {
        var c = Configuration()
        var seen: [String: SourceLocation] = [:]
        var relayDirectives: [Directive] = []
        for d in directives {
            if ["hostname", "spool", "limits", "smtp", "queue", "rules", "local-names", "allow-untrusted-routing", "tls", "auth",
                "dns", "outbound", "rewrite"].contains(d.name) {
                if let first = seen[d.name] {
                    error(d.location, "'\(d.name)' is set twice (first at line \(first.line))")
                    continue
                }
                seen[d.name] = d.location
            }
            switch d.name {
            case "hostname":
                guard let a = single(d) else { continue }
                if DomainName(a.text) == nil { error(a.location, "hostname '\(a.text)' is not a valid domain name") }
                c.hostname = a.text
            case "spool":
                guard let a = single(d) else { continue }
                c.spool = a.text
            case "listener":
                if let l = listener(d) {
                    if c.listeners.contains(where: { $0.name == l.name }) {
                        error(d.arguments[0].location, "listener '\(l.name)' is defined twice")
                    } else {
                        c.listeners.append(l)
                    }
                }
            case "limits":
                limits(d, &c.limits)
            case "smtp":
                smtp(d, &c.smtp)
            case "tls":
                for e in block(d, keys: Self.tlsKeys) {
                    guard e.arguments.count == 2 else {
                        error(e.location, "write: certificate \"CHAIN.pem\" \"KEY.pem\" (the chain, leaf first, and its private key)")
                        continue
                    }
                    c.tls.certificates.append(.init(chain: reader.resolve(e.arguments[0].text, from: e.location.file),
                                                    key: reader.resolve(e.arguments[1].text, from: e.location.file),
                                                    location: e.location))
                }
            case "queue":
                for e in block(d, keys: Self.queueKeys) {
                    if e.name == "writers", let n = integer(e, range: 1...256) { c.queue.writers = n } else {
                        queueSetting(e, &c.delivery)
                    }
                }
            case "networks", "domains", "users", "pins", "ca":
                namedList(d, &c.lists)
            case "dns":
                dnsBlock(d, &c.delivery)
            case "outbound":
                outboundBlock(d, &c.delivery)
            case "route":
                routeBlock(d, &c.delivery)
            case "rewrite":
                rewriteBlock(d, &c.delivery)
            case "pam":
                pamBackend(d, &c.auth)
            case "ldap":
                ldapBackend(d, &c.auth)
            case "auth":
                authBlock(d, &c.auth)
            case "senders":
                sendersList(d, &c.auth, &c.lists)
            case "rules", "local-names", "allow-untrusted-routing":
                relayDirectives.append(d)
            default:
                unknown(d, among: Self.topLevel, context: "directive")
            }
        }
        for a in pendingAuthorityChecks where c.lists.authorities[a.text] == nil {
            error(a.location, "no CA named '\(a.text)': define it with ca \(a.text) file \"PATH\"")
        }
        for (name, at) in pendingTLSChecks {
            if let l = c.listeners.first(where: { $0.name == name }), [.required, .implicit].contains(l.tls ?? .none),
               c.tls.certificates.isEmpty {
                error(at, "listener '\(name)' wants TLS \(l.tls!.rawValue) but no certificate is configured: add tls { certificate \"CHAIN\" \"KEY\" }")
            }
        }
        checkListenerAuth(c)
        // Rules refer to lists and listeners, which may come later in the file: interpret them last.
        interpretRelay(relayDirectives, &c, file: directives.first?.location.file)
        // Listen addresses must be unique across listeners.
        var addresses: [ListenAddress: String] = [:]
        for l in c.listeners {
            for a in l.addresses where a.port != 0 {
                if let other = addresses[a] {
                    diagnostics.append(Diagnostic(directives.first { $0.name == "listener" && $0.arguments.first?.text == l.name }!.location,
                                                  "address \(a) is used by listener '\(other)' too"))
                }
                addresses[a] = l.name
            }
        }
        return c
    }

    // MARK: Blocks

    mutating func listener(_ d: Directive) -> Listener? {
        guard d.arguments.count == 1 else {
            error(d.location, "listener takes a name, then a block: listener NAME { address ADDR:PORT }")
            return nil
        }
        let name = d.arguments[0]
        if !name.text.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" }) {
            error(name.location, "listener name '\(name.text)' may hold only letters, digits, '-' and '_'")
        }
        var addresses: [ListenAddress] = []
        var written = false
        var mode: TLSMode?
        var authorities: [String] = []
        let entries = block(d, keys: Self.listenerKeys)
        for e in entries where e.name == "tls" {
            guard let a = single(e) else { continue }
            if let m = TLSMode(rawValue: a.text) { mode = m } else {
                error(a.location, "tls is none, may, required or implicit, not '\(a.text)'")
            }
        }
        for e in entries where e.name == "client-certificates" {
            if e.arguments.isEmpty { error(e.location, "client-certificates needs the names of one or more CAs (ca NAME file ...)") }
            authorities += e.arguments.map(\.text)
            for a in e.arguments { pendingAuthorityChecks.append(a) }
        }
        var backends: [String]?
        var authWithoutTLS = false
        for e in entries where e.name == "auth" {
            if e.arguments.isEmpty { error(e.location, "auth needs the names of one or more backends (pam NAME { } / ldap NAME { }), or none") }
            if e.arguments.map(\.text) == ["none"] { backends = []; continue }
            backends = e.arguments.map(\.text)
            for a in e.arguments { pendingBackendChecks.append((a.text, a.location)) }
        }
        for e in entries where e.name == "auth-without-tls" {
            if let a = single(e), let b = boolean(a) { authWithoutTLS = b }
        }
        for e in entries where e.name == "address" {
            written = true
            guard !e.arguments.isEmpty else { error(e.location, "address needs ADDR:PORT"); continue }
            for a in e.arguments {
                if let la = ListenAddress(a.text) { addresses.append(la) } else {
                    error(a.location, "'\(a.text)' is not an address and port (write 192.0.2.1:25 or [2001:db8::1]:25)")
                }
            }
        }
        if d.block != nil && !written { error(d.location, "listener '\(name.text)' has no address") }
        var l = Listener(name: name.text, addresses: addresses, tls: mode)
        l.clientCertificateAuthorities = authorities
        l.authBackends = backends
        l.authWithoutTLS = authWithoutTLS
        pendingAuthListeners.append((l.name, d.location))
        if mode != nil { pendingTLSChecks.append((l.name, d.location)) }
        return l
    }

    mutating func limits(_ d: Directive, _ l: inout Limits) {
        for e in block(d, keys: Self.limitKeys) {
            switch e.name {
            case "message-size": if let v = size(e) { l.messageSize = v }
            case "recipients": if let v = integer(e, range: 1...100_000) { l.recipients = v }
            case "errors": if let v = integer(e, range: 1...1000) { l.errors = v }
            case "command-line": if let v = integer(e, range: 512...1000) { l.commandLine = v }
            case "text-line": if let v = integer(e, range: 1000...100_000) { l.textLine = v }
            case "sessions": if let v = integer(e, range: 1...1_000_000) { l.sessions = v }
            case "sessions-per-client": if let v = integer(e, range: 1...1_000_000) { l.sessionsPerClient = v }
            case "command-timeout": if let v = duration(e) { l.commandTimeout = v }
            case "data-timeout": if let v = duration(e) { l.dataTimeout = v }
            case "received-headers": if let v = integer(e, range: 1...1000) { l.receivedHeaders = v }
            case "shutdown-timeout": if let v = duration(e) { l.shutdownTimeout = v }
            default: break
            }
        }
    }

    mutating func smtp(_ d: Directive, _ s: inout SMTPOptions) {
        for e in block(d, keys: Self.smtpKeys) {
            switch e.name {
            case "greeting-delay":
                if let v = duration(e) { s.greetingDelay = v }
            case "normalize-bare-lf":
                if e.arguments.isEmpty { error(e.location, "normalize-bare-lf needs one or more networks") }
                for a in e.arguments {
                    if let n = IPNetwork(a.text) { s.normalizeBareLF.append(n) } else {
                        error(a.location, "'\(a.text)' is not a network (write 192.0.2.0/24 or 2001:db8::/32)")
                    }
                }
            default: break
            }
        }
    }

    /// The entries of `d`'s block whose names are in `keys`; reports the others, and a missing block.
    mutating func block(_ d: Directive, keys: [String]) -> [Directive] {
        guard let entries = d.block else {
            error(d.location, "'\(d.name)' needs a block: \(d.name) { ... }")
            return []
        }
        var out: [Directive] = []
        var seen: [String: SourceLocation] = [:]
        for e in entries {
            guard keys.contains(e.name) else {
                unknown(e, among: keys, context: "setting in '\(d.name)'")
                continue
            }
            if e.block != nil { error(e.location, "'\(e.name)' takes no block") }
            if e.name != "address" && e.name != "normalize-bare-lf" && e.name != "certificate" {
                if let first = seen[e.name] {
                    error(e.location, "'\(e.name)' is set twice (first at line \(first.line))")
                    continue
                }
                seen[e.name] = e.location
            }
            out.append(e)
        }
        return out
    }

    // MARK: Values

    mutating func single(_ d: Directive) -> Argument? {
        guard d.arguments.count == 1, d.block == nil else {
            error(d.location, "'\(d.name)' takes exactly one value")
            return nil
        }
        return d.arguments[0]
    }

    mutating func integer(_ d: Directive, range: ClosedRange<Int>) -> Int? {
        guard let a = single(d) else { return nil }
        guard let v = Int(a.text), a.text.allSatisfy(\.isNumber) else {
            error(a.location, "'\(a.text)' is not a whole number")
            return nil
        }
        guard range.contains(v) else {
            error(a.location, "\(d.name) must be between \(range.lowerBound) and \(range.upperBound), not \(v)")
            return nil
        }
        return v
    }

    /// `25M`, `512k`, `1G`, `26214400` (binary multiples: k = 1024).
    mutating func size(_ d: Directive) -> Int? {
        guard let a = single(d) else { return nil }
        if let v = Self.parseSize(a.text), v > 0 { return v }
        error(a.location, "'\(a.text)' is not a size (write 25M, 512k or a number of octets)")
        return nil
    }

    public static func parseSize(_ text: String) -> Int? {
        let units: [(String, Int)] = [("KiB", 1 << 10), ("MiB", 1 << 20), ("GiB", 1 << 30),
                                      ("k", 1 << 10), ("K", 1 << 10), ("M", 1 << 20), ("G", 1 << 30), ("", 1)]
        for (suffix, mult) in units where text.hasSuffix(suffix) {
            let number = text.dropLast(suffix.count)
            guard !number.isEmpty, number.allSatisfy(\.isNumber), let n = Int(number),
                  n <= Int.max / mult / 2 else { continue }
            return n * mult
        }
        return nil
    }

    /// `300s`, `5m`, `1h`, `2d`, `250ms`.
    mutating func duration(_ d: Directive) -> Duration? {
        guard let a = single(d) else { return nil }
        if let v = Self.parseDuration(a.text) { return v }
        error(a.location, "'\(a.text)' is not a duration (write 250ms, 30s, 5m, 1h or 2d)")
        return nil
    }

    public static func parseDuration(_ text: String) -> Duration? {
        let units: [(String, Int64)] = [("ms", 1), ("s", 1000), ("m", 60_000), ("h", 3_600_000), ("d", 86_400_000)]
        for (suffix, millis) in units where text.hasSuffix(suffix) {
            let number = text.dropLast(suffix.count)
            guard !number.isEmpty, number.allSatisfy(\.isNumber), let n = Int64(number), n < 10_000_000 else { continue }
            return .milliseconds(n * millis)
        }
        return nil
    }

    // MARK: Diagnostics

    mutating func error(_ at: SourceLocation, _ message: String) {
        diagnostics.append(Diagnostic(at, message))
    }

    mutating func warning(_ at: SourceLocation, _ message: String) {
        diagnostics.append(Diagnostic(at, message, severity: .warning))
    }

    mutating func unknown(_ d: Directive, among known: [String], context: String) {
        var message = "unknown \(context) '\(d.name)'"
        if let hint = Self.nearest(d.name, in: known) { message += "; did you mean '\(hint)'?" }
        error(d.location, message)
    }

    /// The known word within edit distance 2 (or a third of the word), for "did you mean".
    static func nearest(_ word: String, in known: [String]) -> String? {
        let best = known.map { ($0, editDistance(word.lowercased(), $0)) }.min { $0.1 < $1.1 }
        guard let (w, d) = best, d <= max(2, word.count / 3) else { return nil }
        return w
    }

    static func editDistance(_ a: String, _ b: String) -> Int {
        let a = Array(a.utf8), b = Array(b.utf8)
        if a.isEmpty { return b.count }
        if b.isEmpty { return a.count }
        var prev = Array(0...b.count), cur = [Int](repeating: 0, count: b.count + 1)
        for i in 1...a.count {
            cur[0] = i
            for j in 1...b.count {
                cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
            }
            swap(&prev, &cur)
        }
        return prev[b.count]
    }
}
