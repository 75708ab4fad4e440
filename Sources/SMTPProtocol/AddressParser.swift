import MailModel

/// RFC 5321 4.1.2 `Path` and `Mailbox`, extended by RFC 6531 (UTF-8 in atoms, quoted strings and
/// U-labels). Source routes (`<@a,@b:user@c>`) are parsed and dropped (RFC 5321 appendix C).
public enum AddressParser {
    public enum ParsedPath: Hashable, Sendable {
        case null
        case postmaster
        case mailbox(Mailbox)

        var mailbox: Mailbox? { if case .mailbox(let m) = self { return m } else { return nil } }
        var reverse: ReversePath {
            switch self {
            case .null: return .null
            case .mailbox(let m): return .mailbox(m)
            case .postmaster: return .null  // not reachable: MAIL does not allow it
            }
        }
        var forward: ForwardPath {
            switch self {
            case .postmaster: return .postmaster
            case .mailbox(let m): return .mailbox(m)
            case .null: return .postmaster  // not reachable: RCPT does not allow it
            }
        }
    }

    /// Parses `<...>` at the start of `text`; returns the path (nil when malformed) and what follows
    /// it (the parameters), with the separating spaces removed.
    public static func parsePath(_ text: ArraySlice<UInt8>, allowNull: Bool, allowPostmaster: Bool)
        -> (ParsedPath?, ArraySlice<UInt8>)
    {
        guard text.first == UInt8(ascii: "<"),
              let close = closingBracket(text) else { return (nil, text[text.endIndex...]) }
        var rest = text[text.index(after: close)...]
        if let f = rest.first, f != UInt8(ascii: " ") { return (nil, rest) }
        while rest.first == UInt8(ascii: " ") { rest = rest.dropFirst() }
        var inner = text[text.index(after: text.startIndex)..<close]

        if inner.isEmpty { return (allowNull ? .null : nil, rest) }
        if allowPostmaster, inner.count == 10,
           String(decoding: inner, as: UTF8.self).lowercased() == "postmaster" { return (.postmaster, rest) }
        if inner.first == UInt8(ascii: "@") {
            // A-d-l ":" : validate each At-domain, then ignore the route.
            guard let colon = inner.firstIndex(of: UInt8(ascii: ":")) else { return (nil, rest) }
            for hop in inner[inner.startIndex..<colon].split(separator: UInt8(ascii: ","), omittingEmptySubsequences: false) {
                guard hop.first == UInt8(ascii: "@"), parseDomain(hop.dropFirst(), allowUTF8: true) != nil else {
                    return (nil, rest)
                }
            }
            inner = inner[inner.index(after: colon)...]
        }
        return (parseMailbox(inner).map { .mailbox($0) }, rest)
    }

    /// The index of the `>` closing the path, skipping quoted strings (a `>` may sit inside quotes).
    static func closingBracket(_ text: ArraySlice<UInt8>) -> ArraySlice<UInt8>.Index? {
        var inQuotes = false
        var i = text.index(after: text.startIndex)
        while i < text.endIndex {
            let b = text[i]
            if inQuotes {
                if b == UInt8(ascii: "\\") { i += 2; continue }
                if b == UInt8(ascii: "\"") { inQuotes = false }
            } else {
                if b == UInt8(ascii: "\"") { inQuotes = true }
                if b == UInt8(ascii: ">") { return i }
                if b == UInt8(ascii: "<") { return nil }
            }
            i += 1
        }
        return nil
    }

    /// `Local-part "@" ( Domain / address-literal )`.
    public static func parseMailbox(_ text: ArraySlice<UInt8>) -> Mailbox? {
        guard let at = localPartEnd(text), at < text.endIndex, text[at] == UInt8(ascii: "@") else { return nil }
        let local = text[text.startIndex..<at]
        let domainText = text[text.index(after: at)...]
        let domain: Domain
        if domainText.first == UInt8(ascii: "[") {
            guard let d = parseAddressLiteral(domainText) else { return nil }
            domain = d
        } else {
            guard let d = parseDomain(domainText, allowUTF8: true) else { return nil }
            domain = .name(d)
        }
        return Mailbox(localPart: String(decoding: local, as: UTF8.self), domain: domain)
    }

    /// Validates the local part at the start of `text` and returns the index just after it.
    static func localPartEnd(_ text: ArraySlice<UInt8>) -> ArraySlice<UInt8>.Index? {
        guard let first = text.first else { return nil }
        var i = text.startIndex
        if first == UInt8(ascii: "\"") {
            // Quoted-string: qtextSMTP / quoted-pairSMTP.
            i += 1
            while i < text.endIndex {
                let b = text[i]
                if b == UInt8(ascii: "\"") { return i == text.startIndex + 1 ? nil : i + 1 }
                if b == UInt8(ascii: "\\") {
                    guard i + 1 < text.endIndex, text[i + 1] >= 32, text[i + 1] <= 126 else { return nil }
                    i += 2
                    continue
                }
                guard (b >= 32 && b <= 126) || b >= 0x80 else { return nil }
                i += 1
            }
            return nil
        }
        // Dot-string: Atom *("." Atom).
        var atomLength = 0
        while i < text.endIndex, text[i] != UInt8(ascii: "@") {
            let b = text[i]
            if b == UInt8(ascii: ".") {
                guard atomLength > 0 else { return nil }
                atomLength = 0
            } else {
                guard isAtext(b) else { return nil }
                atomLength += 1
            }
            i += 1
        }
        return atomLength > 0 ? i : nil
    }

    static func isAtext(_ b: UInt8) -> Bool {
        if isAlnum(b) || b >= 0x80 { return true }
        switch b {
        case UInt8(ascii: "!"), UInt8(ascii: "#"), UInt8(ascii: "$"), UInt8(ascii: "%"), UInt8(ascii: "&"),
             UInt8(ascii: "'"), UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: "/"),
             UInt8(ascii: "="), UInt8(ascii: "?"), UInt8(ascii: "^"), UInt8(ascii: "_"), UInt8(ascii: "`"),
             UInt8(ascii: "{"), UInt8(ascii: "|"), UInt8(ascii: "}"), UInt8(ascii: "~"):
            return true
        default:
            return false
        }
    }

    static func parseDomain(_ text: ArraySlice<UInt8>, allowUTF8: Bool) -> DomainName? {
        guard let s = String(validating: text, as: UTF8.self) else { return nil }
        return DomainName(s, allowUTF8: allowUTF8)
    }

    /// `[192.0.2.1]`, `[IPv6:2001:db8::1]`, or a General-address-literal `[tag:content]`.
    public static func parseAddressLiteral(_ text: ArraySlice<UInt8>) -> Domain? {
        guard text.count >= 3, text.first == UInt8(ascii: "["), text.last == UInt8(ascii: "]") else { return nil }
        let inner = String(decoding: text.dropFirst().dropLast(), as: UTF8.self)
        if let a = IPAddress(inner), a.isV4 { return .ipv4(a) }
        guard let colon = inner.firstIndex(of: ":") else { return nil }
        let tag = inner[..<colon]
        let content = inner[inner.index(after: colon)...]
        if tag.lowercased() == "ipv6" {
            guard let a = IPAddress(content), !a.isV4 else { return nil }
            return .ipv6(a)
        }
        // Standardized-tag is an Ldh-str; dcontent is %d33-90 / %d94-126.
        guard !tag.isEmpty, tag.utf8.allSatisfy({ isAlnum($0) || $0 == UInt8(ascii: "-") }),
              tag.utf8.last != UInt8(ascii: "-"), !content.isEmpty,
              content.utf8.allSatisfy({ ($0 >= 33 && $0 <= 90) || ($0 >= 94 && $0 <= 126) }) else { return nil }
        return .general(tag: String(tag), content: String(content))
    }
}
