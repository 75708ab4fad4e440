/// Queue identifiers: 16 characters of Crockford base32 lowercase; the first ten encode the
/// microseconds since 1970, so `ls` lists the queue in arrival order, and the last six are random.
public struct QueueID: Hashable, Sendable, Comparable, CustomStringConvertible {
    public let text: String
    static let alphabet = Array("0123456789abcdefghjkmnpqrstvwxyz".utf8)

    public init?(_ text: String) {
        guard text.utf8.count == 16, text.utf8.allSatisfy({ QueueID.alphabet.contains($0) }) else { return nil }
        self.text = text
    }

    /// `micros` since the epoch, and 30 random bits.
    public init(micros: UInt64, random: UInt32) {
        var out = [UInt8](repeating: 0, count: 16)
        var t = micros
        for i in stride(from: 9, through: 0, by: -1) { out[i] = QueueID.alphabet[Int(t & 31)]; t >>= 5 }
        var r = random
        for i in stride(from: 15, through: 10, by: -1) { out[i] = QueueID.alphabet[Int(r & 31)]; r >>= 5 }
        text = String(decoding: out, as: UTF8.self)
    }

    public static func < (a: QueueID, b: QueueID) -> Bool { a.text < b.text }
    public var description: String { text }
}

/// One SMTP connection's identifier, carried on every log line of that connection.
public struct SessionID: Hashable, Sendable, CustomStringConvertible {
    public let value: UInt64
    public init(_ value: UInt64) { self.value = value }
    public var description: String {
        let hex = String(value, radix: 16)
        return String(repeating: "0", count: max(0, 8 - hex.count)) + hex
    }
}
