/// An RFC 3463 enhanced status code `class.subject.detail`.
public struct EnhancedStatus: Hashable, Sendable, CustomStringConvertible {
    public let klass: Int
    public let subject: Int
    public let detail: Int

    public init(_ klass: Int, _ subject: Int, _ detail: Int) {
        precondition([2, 4, 5].contains(klass) && (0...999).contains(subject) && (0...999).contains(detail),
                     "invalid enhanced status \(klass).\(subject).\(detail)")
        self.klass = klass; self.subject = subject; self.detail = detail
    }

    /// Parses `5.7.1` (for configuration-supplied replies); nil when malformed.
    public init?(parsing text: String) {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, let k = Int(parts[0]), let s = Int(parts[1]), let d = Int(parts[2]),
              [2, 4, 5].contains(k), (0...999).contains(s), (0...999).contains(d),
              parts.allSatisfy({ !$0.isEmpty && $0.count <= 3 && $0.allSatisfy(\.isNumber) }) else { return nil }
        self.init(k, s, d)
    }

    public var description: String { "\(klass).\(subject).\(detail)" }
}
