/// A domain as it appears after the `@` of a mailbox: a name or an address literal (RFC 5321 4.1.3).
/// Names compare case-insensitively with a trailing dot dropped.
public enum Domain: Hashable, Sendable, CustomStringConvertible {
    case name(DomainName)
    case ipv4(IPAddress)
    case ipv6(IPAddress)
    /// `[tag:content]` (RFC 5321 General-address-literal): syntactically valid, never routable.
    case general(tag: String, content: String)

    public var description: String {
        switch self {
        case .name(let n): return n.text
        case .ipv4(let a): return "[\(a)]"
        case .ipv6(let a): return "[IPv6:\(a)]"
        case .general(let t, let c): return "[\(t):\(c)]"
        }
    }

    public var isAddressLiteral: Bool { if case .name = self { return false } else { return true } }
}

/// A domain name. `text` keeps the client's spelling (minus a trailing dot); equality and hashing use
/// the ASCII-lowercased form.
public struct DomainName: Hashable, Sendable, CustomStringConvertible {
    public let text: String
    public let canonical: String
    public var isASCII: Bool { text.utf8.allSatisfy { $0 < 0x80 } }

    /// Validates RFC 5321 `Domain` (labels of letters, digits and hyphens, no leading or trailing
    /// hyphen, at most 63 octets a label and 255 in all). With `allowUTF8` (RFC 6531), labels may also
    /// hold non-ASCII UTF-8 (U-labels); their IDNA validity is the next hop's business.
    public init?(_ raw: String, allowUTF8: Bool = false) {
        var s = Substring(raw)
        if s.hasSuffix(".") { s = s.dropLast() }
        let bytes = Array(s.utf8)
        guard !bytes.isEmpty, bytes.count <= 255 else { return nil }
        var labelStart = 0
        for i in 0...bytes.count {
            if i == bytes.count || bytes[i] == UInt8(ascii: ".") {
                let label = bytes[labelStart..<i]
                guard !label.isEmpty, label.count <= 63,
                      label.first != UInt8(ascii: "-"), label.last != UInt8(ascii: "-") else { return nil }
                labelStart = i + 1
                continue
            }
            let b = bytes[i]
            let ldh = (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5a) || (b >= 0x61 && b <= 0x7a)
                || b == UInt8(ascii: "-")
            guard ldh || (allowUTF8 && b >= 0x80) else { return nil }
        }
        text = String(s)
        canonical = String(decoding: bytes.map { ($0 >= 0x41 && $0 <= 0x5a) ? $0 | 0x20 : $0 }, as: UTF8.self)
    }

    public static func == (a: DomainName, b: DomainName) -> Bool { a.canonical == b.canonical }
    public func hash(into h: inout Hasher) { h.combine(canonical) }
    public var description: String { text }
}
