import MailModel

/// A set of domain names, hashed. `example.org` matches that domain only; `.example.org` matches its
/// subdomains only (write both for both). Comparison is case-insensitive, trailing dots dropped, and
/// only whole labels match, so `.example.org` never matches `xexample.org` or `example.org.evil.test`.
public struct DomainSet: Sendable, Hashable {
    var exact: Set<String> = []
    var parents: Set<String> = []   // "example.org" for an entry ".example.org"
    public private(set) var count = 0

    public init() {}

    /// The names listed exactly (not `.domain` entries).
    public var exactNames: Set<String> { exact }

    /// Parses an entry; nil when it is not a domain or `.domain`.
    public static func entry(_ text: String) -> (name: String, subdomains: Bool)? {
        let sub = text.hasPrefix(".")
        guard let d = DomainName(sub ? String(text.dropFirst()) : text, allowUTF8: true) else { return nil }
        return (d.canonical, sub)
    }

    public mutating func insert(_ name: String, subdomains: Bool) {
        if subdomains { parents.insert(name) } else { exact.insert(name) }
        count += 1
    }

    public func contains(_ domain: DomainName) -> Bool {
        let name = domain.canonical
        if exact.contains(name) { return true }
        guard !parents.isEmpty else { return false }
        var rest = Substring(name)
        while let dot = rest.firstIndex(of: ".") {
            rest = rest[rest.index(after: dot)...]
            if parents.contains(String(rest)) { return true }
        }
        return false
    }
}
