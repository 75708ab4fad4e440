/// Cuts a server's bytes into replies (RFC 5321 4.2): `250-text` lines continue, `250 text` ends.
/// Pure and bounded: a line longer than `maxLine` or a reply of more than `maxLines` lines is an error,
/// never a growing buffer.
public struct ReplyParser: Sendable {
    public struct ServerReply: Sendable, Hashable, CustomStringConvertible {
        public let code: Int
        /// The text of every line, without the code and separator.
        public let lines: [String]
        public var klass: Int { code / 100 }
        /// The RFC 3463 status at the start of the first line, if any.
        public var status: EnhancedStatus? {
            guard let first = lines.first else { return nil }
            return EnhancedStatus(parsing: String(first.prefix { $0 != " " }))
        }
        public var description: String { "\(code) \(lines.joined(separator: " / "))" }
        public init(code: Int, lines: [String]) { self.code = code; self.lines = lines }
    }

    public enum ParseError: Error, Sendable, Equatable { case malformed(String), tooLong }

    var buffer: [UInt8] = []
    var pending: [String] = []
    var pendingCode: Int?
    let maxLine: Int
    let maxLines: Int

    public init(maxLine: Int = 4096, maxLines: Int = 200) { self.maxLine = maxLine; self.maxLines = maxLines }

    /// Feeds bytes; returns the replies completed by them.
    public mutating func feed(_ bytes: ArraySlice<UInt8>) throws(ParseError) -> [ServerReply] {
        buffer.append(contentsOf: bytes)
        var out: [ServerReply] = []
        var start = 0
        while let lf = buffer[start...].firstIndex(of: 10) {
            var end = lf
            if end > start && buffer[end - 1] == 13 { end -= 1 }
            let line = buffer[start..<end]
            start = lf + 1
            if let r = try take(line) { out.append(r) }
        }
        buffer.removeFirst(start)
        if buffer.count > maxLine { throw .tooLong }
        return out
    }

    mutating func take(_ line: ArraySlice<UInt8>) throws(ParseError) -> ServerReply? {
        guard line.count >= 3, line.count <= maxLine,
              let code = Int(String(decoding: line.prefix(3), as: UTF8.self)), (200...599).contains(code) else {
            throw .malformed(String(decoding: line.prefix(80), as: UTF8.self))
        }
        let sep: UInt8 = line.count > 3 ? line[line.startIndex + 3] : UInt8(ascii: " ")
        guard sep == UInt8(ascii: " ") || sep == UInt8(ascii: "-") else {
            throw .malformed(String(decoding: line.prefix(80), as: UTF8.self))
        }
        if let p = pendingCode, p != code { throw .malformed("reply code changed inside a multi-line reply") }
        pendingCode = code
        pending.append(line.count > 4 ? String(decoding: line.dropFirst(4), as: UTF8.self) : "")
        if pending.count > maxLines { throw .tooLong }
        guard sep == UInt8(ascii: " ") else { return nil }
        defer { pending = []; pendingCode = nil }
        return ServerReply(code: code, lines: pending)
    }
}
