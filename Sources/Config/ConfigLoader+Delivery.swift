import Delivery
import DNS
import MailModel
import PolicyLanguage

/// `queue { }` delivery settings, `dns { }`, `outbound { }`, `route NAME { }` and `rewrite { }`
/// (docs/policy-language.md, "Delivery").
extension ConfigLoader {
    static let dnsKeys = ["upstream", "prefer", "trust-anchor-file"]
    static let outboundKeys = ["tls", "port", "helo", "mx-names", "delivery", "ca-file"]
    static let routeKeys = ["to", "tls", "user", "password-file"]
    static let tlsLevels = ["none", "may", "encrypt", "verify"]

    /// The delivery settings inside `queue { }` (besides `writers`).
    mutating func queueSetting(_ e: Directive, _ o: inout DeliveryOptions) {
        switch e.name {
        case "delivery-threads": if let n = integer(e, range: 1...1000) { o.runner.concurrency = n }
        case "per-destination": if let n = integer(e, range: 1...1000) { o.courier.perDestination = n }
        case "recipients-per-transaction": if let n = integer(e, range: 1...1000) { o.runner.recipientsPerTransaction = n }
        case "retry-first": if let d = duration(e) { o.runner.retry.first = d }
        case "retry-max": if let d = duration(e) { o.runner.retry.maximum = d }
        case "lifetime": if let d = duration(e) { o.runner.retry.lifetime = d }
        case "connect-timeout": if let d = duration(e) { o.courier.connectTimeout = d }
        case "reply-timeout": if let d = duration(e) { o.courier.replyTimeout = d }
        case "data-timeout": if let d = duration(e) { o.courier.dataTimeout = d }
        case "backoff": if let d = duration(e) { o.courier.backoff = d }
        case "scan-interval": if let d = duration(e) { o.runner.scanInterval = d }
        case "connection-reuse": if let n = integer(e, range: 1...10_000) { o.courier.reuse = n }
        case "delay-warning": if let d = duration(e) { o.runner.delayWarning = d }
        case "connection-idle": if let d = duration(e) { o.courier.reuseIdle = d }
        default: break
        }
    }

    mutating func dnsBlock(_ d: Directive, _ o: inout DeliveryOptions) {
        for e in block(d, keys: Self.dnsKeys) {
            switch e.name {
            case "upstream":
                guard let a = single(e) else { continue }
                let parts = a.text.split(separator: "@")
                if parts.count > 2 || IPAddress(String(parts[0])) == nil || (parts.count == 2 && UInt16(parts[1]) == nil) {
                    error(a.location, "upstream is an address with an optional port: 127.0.0.1@5353")
                } else {
                    o.dns.upstream = a.text
                }
            case "prefer":
                guard let a = single(e) else { continue }
                switch a.text { case "ipv4": o.dns.preferIPv6 = false; case "ipv6": o.dns.preferIPv6 = true
                default: error(a.location, "prefer is ipv4 or ipv6") }
            default:  // trust-anchor-file
                if let a = single(e) { o.dns.trustAnchorFile = reader.resolve(a.text, from: e.location.file) }
            }
        }
    }

    mutating func outboundBlock(_ d: Directive, _ o: inout DeliveryOptions) {
        for e in block(d, keys: Self.outboundKeys) {
            switch e.name {
            case "tls": if let l = tlsLevel(e) { o.runner.routes.defaultTLS = l }
            case "port": if let n = integer(e, range: 1...65535) { o.port = n }
            case "helo":
                if let a = single(e) {
                    if DomainName(a.text) == nil { error(a.location, "'\(a.text)' is not a host name") }
                    o.courier.heloName = a.text
                }
            case "delivery":
                if let a = single(e), let b = boolean(a) { o.enabled = b }
            case "ca-file":
                if let a = single(e) { o.courier.caFile = reader.resolve(a.text, from: e.location.file) }
            default:
                if e.arguments.isEmpty { error(e.location, "mx-names needs one or more names") }
                o.mxNames += e.arguments.map { $0.text.lowercased() }
            }
        }
    }

    /// `route example.com { to "[192.0.2.10]:2525"; tls verify; user NAME; password-file "F" }`, or
    /// `route default { ... }` for everything without a route of its own.
    mutating func routeBlock(_ d: Directive, _ o: inout DeliveryOptions) {
        guard let nameArg = d.arguments.first, d.arguments.count == 1 else {
            error(d.location, "write: route DOMAIN { to HOST } or route default { to HOST }")
            return
        }
        let name = nameArg.text.lowercased()
        if name != "default" && DomainName(name) == nil { error(nameArg.location, "'\(nameArg.text)' is not a domain") }
        var target: StaticRoute.Target?
        var route = StaticRoute(target: .mx(""))
        for e in block(d, keys: Self.routeKeys) {
            switch e.name {
            case "to":
                guard let a = single(e) else { continue }
                target = Self.routeTarget(a.text)
                if target == nil { error(a.location, "write: to \"[host]:port\" (no MX lookup) or to host (its MX records)") }
            case "tls": if let l = tlsLevel(e) { route.tls = l }
            case "user": route.user = single(e)?.text
            default:
                guard let a = single(e) else { continue }
                let path = reader.resolve(a.text, from: e.location.file)
                if let text = reader.read(path) {
                    route.password = String(text.split(separator: "\n", omittingEmptySubsequences: false).first ?? "")
                } else {
                    error(a.location, "cannot read the password file \(path)")
                }
            }
        }
        guard d.block != nil else { return }
        guard let target else { error(d.location, "route '\(name)' needs: to \"[host]:port\" or to host"); return }
        route.target = target
        if (route.user == nil) != (route.password == nil) {
            error(d.location, "route '\(name)': user and password-file go together")
        }
        if route.user != nil && route.tls == .none {
            error(d.location, "route '\(name)': credentials are sent over TLS only; set tls may, encrypt or verify")
        }
        if name == "default" {
            if o.runner.routes.fallback != nil { error(nameArg.location, "route default is defined twice") }
            o.runner.routes.fallback = route
        } else {
            if o.runner.routes.byDomain[name] != nil { error(nameArg.location, "route \(name) is defined twice") }
            o.runner.routes.byDomain[name] = route
        }
    }

    /// `[host]:port`, `[host]`, `host:port` (direct, no MX) or `host` (MX lookup).
    static func routeTarget(_ text: String) -> StaticRoute.Target? {
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else { return nil }
            let host = String(text[text.index(after: text.startIndex)..<close])
            let rest = text[text.index(after: close)...]
            if rest.isEmpty { return host.isEmpty ? nil : .direct(host: host, port: 25) }
            guard rest.hasPrefix(":"), let port = Int(rest.dropFirst()), (1...65535).contains(port), !host.isEmpty else { return nil }
            return .direct(host: host, port: port)
        }
        if let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]), (1...65535).contains(port) {
            let host = String(text[..<colon])
            return DomainName(host) != nil || IPAddress(host) != nil ? .direct(host: host, port: port) : nil
        }
        return DomainName(text) != nil ? .mx(text.lowercased()) : nil
    }

    /// `rewrite { old@example.com new@example.net; @old.example @new.example }` or `rewrite file "PATH"`.
    mutating func rewriteBlock(_ d: Directive, _ o: inout DeliveryOptions) {
        var pairs: [(String, String, SourceLocation)] = []
        if let b = d.block {
            for e in b {
                guard e.arguments.count == 1 else { error(e.location, "write: OLD NEW (old@domain new@domain, or @domain @other)"); continue }
                pairs.append((e.name, e.arguments[0].text, e.location))
            }
        } else if d.arguments.count == 2, d.arguments[0].text == "file" {
            let path = reader.resolve(d.arguments[1].text, from: d.location.file)
            guard let text = reader.read(path) else { error(d.arguments[1].location, "cannot read \(path)"); return }
            for (n, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
                var line = Substring(raw)
                if let hash = line.firstIndex(of: "#") { line = line[..<hash] }
                let w = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
                if w.isEmpty { continue }
                let at = SourceLocation(file: path, line: n + 1, column: 1)
                guard w.count == 2 else { error(at, "write: OLD NEW"); continue }
                pairs.append((String(w[0]), String(w[1]), at))
            }
        } else {
            error(d.location, "write: rewrite { OLD NEW ... } or rewrite file \"PATH\"")
            return
        }
        for (old, new, at) in pairs {
            let domainRule = old.hasPrefix("@")
            guard old.contains("@"), new.contains("@"), domainRule == new.hasPrefix("@") else {
                error(at, "rewrite '\(old)' to '\(new)': both whole addresses, or both @domain")
                continue
            }
            o.runner.routes.rewrites[old.lowercased()] = new
        }
    }

    mutating func tlsLevel(_ e: Directive) -> Courier.TLSLevel? {
        guard let a = single(e) else { return nil }
        guard let l = Courier.TLSLevel(rawValue: a.text) else {
            error(a.location, "tls is none, may, encrypt or verify, not '\(a.text)'")
            return nil
        }
        return l
    }
}
