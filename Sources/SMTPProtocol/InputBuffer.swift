/// Bytes received but not yet consumed. Consumption moves a read index; storage is compacted once the
/// consumed prefix is large, so feeding N bytes costs O(N) in total.
public struct InputBuffer: Sendable {
    var storage: [UInt8] = []
    var start = 0

    public init() {}
    public var count: Int { storage.count - start }
    public var isEmpty: Bool { start == storage.count }
    public var bytes: ArraySlice<UInt8> { storage[start...] }

    public mutating func append(_ more: ArraySlice<UInt8>) {
        if start > 0 && start >= storage.count / 2 {
            storage.removeFirst(start)
            start = 0
        }
        storage.append(contentsOf: more)
    }

    public mutating func consume(_ n: Int) {
        start += n
        if start == storage.count {
            // Keep no capacity around for idle sessions.
            storage = []
            start = 0
        }
    }

    public mutating func removeAll() { storage = []; start = 0 }
}

/// Splits command lines off an `InputBuffer` (RFC 5321 2.3.8: lines end in CRLF).
public struct CommandFramer: Sendable {
    public enum Frame: Sendable {
        /// A line without its terminator; `crlf` false when it ended in a bare LF (normalized mode).
        case line([UInt8], crlf: Bool)
        /// The line passed `maxLength`: reported once, and the rest of it up to the next LF is discarded.
        case tooLong
        /// A line ended in LF without CR where bare LF is refused.
        case bareLineFeed
    }

    /// Longest line accepted, terminator included.
    public let maxLength: Int
    public let normalizeBareLF: Bool
    var discarding = false

    public init(maxLength: Int, normalizeBareLF: Bool) {
        self.maxLength = maxLength
        self.normalizeBareLF = normalizeBareLF
    }

    public mutating func next(_ input: inout InputBuffer) -> Frame? {
        while true {
            let bytes = input.bytes
            guard let lf = bytes.firstIndex(of: 10) else {
                if bytes.count >= maxLength {
                    // No end in sight: drop what we hold, and tell the client once.
                    input.removeAll()
                    if !discarding {
                        discarding = true
                        return .tooLong
                    }
                }
                return nil
            }
            let lineLength = lf - bytes.startIndex + 1
            if discarding {
                input.consume(lineLength)
                discarding = false
                continue
            }
            if lineLength > maxLength {
                input.consume(lineLength)
                return .tooLong
            }
            let crlf = lf > bytes.startIndex && bytes[lf - 1] == 13
            let line = Array(bytes[bytes.startIndex..<(crlf ? lf - 1 : lf)])
            input.consume(lineLength)
            if !crlf && !normalizeBareLF { return .bareLineFeed }
            return .line(line, crlf: crlf)
        }
    }
}
