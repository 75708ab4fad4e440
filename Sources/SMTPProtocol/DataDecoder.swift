/// Decodes the DATA stream (RFC 5321 4.1.1.4, 4.5.2): undoes dot-stuffing, finds the end, and refuses
/// everything that could make two peers disagree about where the message ends.
///
/// Only CR LF "." CR LF on the wire ends DATA, in every mode: the CRLF before the dot must itself have
/// been a real CRLF. A bare CR, a bare LF (unless `normalizeBareLF`), a NUL, an overlong line, a body
/// over the size limit or too many `Received:` headers *poisons* the message: decoding goes on to the
/// real end so the session stays in step with the client, but nothing is kept and the reply is a 5xx.
/// With `normalizeBareLF` a bare LF becomes CRLF, yet a "." line next to a bare LF is still poison,
/// so `\n.\n`, `\n.\r\n` and `\r\n.\n` never end (or split) a message. Nothing this emits holds a
/// bare CR or LF.
public struct DataDecoder: Sendable {
    public enum Problem: Hashable, Sendable {
        case bareNewline, nul, lineTooLong, tooBig, tooManyHops

        public var reply: Reply {
            switch self {
            case .bareNewline: return .bareNewlineInData
            case .nul: return .nulInData
            case .lineTooLong: return .lineTooLong
            case .tooBig: return .messageTooBig
            case .tooManyHops: return .tooManyHops
            }
        }
    }

    enum State: Sendable { case lineStart, dot, dotCR, inLine, cr }

    public private(set) var body: [UInt8] = []
    public private(set) var problem: Problem?
    public private(set) var receivedHeaders = 0
    /// Decoded octets so far, counted on past the limit so the log can say how big it was.
    public private(set) var size = 0

    let maxSize: Int
    let maxLineLength: Int
    let normalizeBareLF: Bool
    let maxReceivedHeaders: Int
    var state = State.lineStart
    var lineLength = 0
    var previousLineEndedWithCRLF: Bool
    var inHeaders = true
    var lineStartInBody = 0

    /// - Parameters:
    ///   - maxLineLength: octets a line may take on the wire, CRLF included (RFC 5321 4.5.3.1.6: 1000).
    ///   - commandEndedWithCRLF: whether the DATA command line itself ended in a real CRLF (it can end
    ///     in a bare LF only where bare LF is normalized); the end marker needs a real CRLF before it.
    public init(maxSize: Int, maxLineLength: Int = 1000, normalizeBareLF: Bool = false,
                maxReceivedHeaders: Int = 30, commandEndedWithCRLF: Bool = true) {
        self.maxSize = maxSize
        self.maxLineLength = maxLineLength
        self.normalizeBareLF = normalizeBareLF
        self.maxReceivedHeaders = maxReceivedHeaders
        self.previousLineEndedWithCRLF = commandEndedWithCRLF
        body.reserveCapacity(min(maxSize, 16 * 1024))
    }

    /// Consumes bytes up to and including the end marker. Returns how many were consumed and whether
    /// the end was reached; bytes after the end belong to the next command.
    public mutating func feed(_ input: ArraySlice<UInt8>) -> (consumed: Int, finished: Bool) {
        var consumed = 0
        for b in input {
            consumed += 1
            if step(b) { return (consumed, true) }
        }
        return (consumed, false)
    }

    /// One octet. Returns true at the end of DATA.
    @inline(__always) mutating func step(_ b: UInt8) -> Bool {
        switch state {
        case .lineStart:
            if b == UInt8(ascii: ".") {
                lineLength = 1
                state = .dot
                return false
            }
            state = .inLine
            inLine(b)
        case .inLine:
            inLine(b)
        case .cr:
            countLineOctet()
            if b == 10 {
                emit(13); emit(10)
                endLine(crlf: true)
            } else {
                poison(.bareNewline)
                state = .inLine
                inLineAfterCount(b)
            }
        case .dot:
            countLineOctet()
            switch b {
            case 13:
                state = .dotCR
            case 10:
                // "." then a bare LF: a terminator candidate we refuse to interpret.
                poison(.bareNewline)
                endLine(crlf: false)
            default:
                state = .inLine   // dot-stuffing undone: the leading dot is dropped
                inLineAfterCount(b)
            }
        case .dotCR:
            countLineOctet()
            if b == 10 {
                if previousLineEndedWithCRLF { return true }
                poison(.bareNewline)   // "\n.\r\n": never an end, never a split
                endLine(crlf: true)
            } else {
                poison(.bareNewline)
                state = .inLine
                inLineAfterCount(b)
            }
        }
        return false
    }

    @inline(__always) mutating func inLine(_ b: UInt8) {
        countLineOctet()
        inLineAfterCount(b)
    }

    @inline(__always) mutating func inLineAfterCount(_ b: UInt8) {
        switch b {
        case 13:
            state = .cr
        case 10:
            if normalizeBareLF {
                emit(13); emit(10)
            } else {
                poison(.bareNewline)
            }
            endLine(crlf: false)
        case 0:
            poison(.nul)
        default:
            emit(b)
        }
    }

    @inline(__always) mutating func countLineOctet() {
        lineLength += 1
        if lineLength > maxLineLength { poison(.lineTooLong) }
    }

    @inline(__always) mutating func emit(_ b: UInt8) {
        size += 1
        guard problem == nil else { return }
        if size > maxSize {
            poison(.tooBig)
            return
        }
        body.append(b)
    }

    mutating func endLine(crlf: Bool) {
        if inHeaders && problem == nil {
            let line = body[lineStartInBody..<max(lineStartInBody, body.count - 2)]
            if line.isEmpty {
                inHeaders = false
            } else if Self.isReceivedField(line) {
                receivedHeaders += 1
                if receivedHeaders > maxReceivedHeaders { poison(.tooManyHops) }
            }
            lineStartInBody = body.count
        }
        previousLineEndedWithCRLF = crlf
        lineLength = 0
        state = .lineStart
    }

    /// `Received:` (RFC 5322 3.6.7), case-insensitive, with the obsolete white space before the colon.
    static func isReceivedField(_ line: ArraySlice<UInt8>) -> Bool {
        let name = Array("received".utf8)
        guard line.count > name.count else { return false }
        var i = line.startIndex
        for c in name {
            guard line[i] | 0x20 == c else { return false }
            i += 1
        }
        while i < line.endIndex, line[i] == 32 || line[i] == 9 { i += 1 }
        return i < line.endIndex && line[i] == UInt8(ascii: ":")
    }

    mutating func poison(_ p: Problem) {
        guard problem == nil else { return }
        problem = p
        body = []   // release the memory at once: nothing of a poisoned message is kept
    }
}
