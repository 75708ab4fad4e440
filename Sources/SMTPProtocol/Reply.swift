/// An SMTP reply: a three-digit code, an optional RFC 3463 enhanced status whose class matches the
/// code's, and one or more text lines. Never built from `(Int, String)` at a call site: use the named
/// constructors in `Reply+Catalog.swift` so that every reply the server can send is listed in one file.
public struct Reply: Hashable, Sendable, CustomStringConvertible {
    public let code: Int
    public let status: EnhancedStatus?
    public let lines: [String]

    /// - Precondition: `code` is 2xx-5xx; `status` (when present) has the code's class; no line holds
    ///   CR, LF or NUL. A violation is a programming error, so it traps in every build.
    public init(_ code: Int, _ status: EnhancedStatus?, _ lines: [String]) {
        precondition((200...599).contains(code), "reply code \(code)")
        if let s = status { precondition(s.klass == code / 100, "reply \(code) with status \(s)") }
        precondition(!lines.isEmpty)
        precondition(lines.allSatisfy { !$0.utf8.contains(where: { $0 == 13 || $0 == 10 || $0 == 0 }) })
        self.code = code; self.status = status; self.lines = lines
    }

    public init(_ code: Int, _ status: EnhancedStatus?, _ text: String) { self.init(code, status, [text]) }

    public var isPositive: Bool { code < 400 }
    public var isTransient: Bool { code / 100 == 4 }
    public var isPermanent: Bool { code / 100 == 5 }

    /// The reply on the wire: `250-first`, ..., `250 last`, each ended by CRLF, status on every line.
    public var wire: [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(lines.reduce(0) { $0 + $1.utf8.count + 16 })
        let prefix = status.map { "\($0) " } ?? ""
        for (i, line) in lines.enumerated() {
            out.append(contentsOf: String(code).utf8)
            out.append(i == lines.count - 1 ? UInt8(ascii: " ") : UInt8(ascii: "-"))
            out.append(contentsOf: prefix.utf8)
            out.append(contentsOf: line.utf8)
            out.append(13); out.append(10)
        }
        return out
    }

    /// `550 5.7.1 Relaying denied` (first line), for logs.
    public var description: String {
        "\(code)\(status.map { " \($0)" } ?? "") \(lines.joined(separator: " / "))"
    }
}
